"""The ledger reads a walk (and its dry run) decides by: is a stage complete, which gates are
ready to apply, is a gate frozen as written, what a manual gate waits for."""

from __future__ import annotations

from stagewise.errors import FrozenRuleMismatch
from stagewise.ledger import Ledger
from stagewise.plan import Plan, StagePlan
from stagewise.study.model import Gate, Study


def freeze_reason(stage_id: str) -> str:
    return f"frozen by stagewise run before stage {stage_id}"


def stage_complete(ledger: Ledger, sp: StagePlan) -> bool:
    """Every planned run of the stage has a succeeded result."""
    if sp.candidates is None:
        return False
    done = {r.key for r in ledger.runs(stage=sp.stage.stage_id, status="succeeded")}
    return all(key in done for key in sp.runs)


def ready_gates(study: Study, ledger: Ledger, plan: Plan) -> list[Gate]:
    """Undecided gates whose pooled stages are all complete."""
    return [
        gate
        for gate in study.gates.values()
        if ledger.active_decision(gate.gate_id) is None
        and all(stage_complete(ledger, plan.stage(s)) for s in gate.stages)
    ]


def unfrozen(study: Study, ledger: Ledger, gate: Gate) -> str | None:
    from stagewise.gates.freeze import require_frozen

    try:
        require_frozen(study, ledger, gate.gate_id)
    except FrozenRuleMismatch as exc:
        return str(exc)
    return None


def waiting_for_decision(study: Study, gate: Gate) -> str:
    return (
        f'waiting for a decision on gate {gate.gate_id} (decide = "manual"): record it with '
        f"`stagewise decide {study.root} {gate.gate_id} --promote ID,... --reason ...`, then run "
        f"`stagewise run {study.root}` again"
    )
