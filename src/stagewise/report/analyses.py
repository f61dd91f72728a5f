"""The one place the report layer calls the gates/analysis engine.

The report never recomputes an analysis itself: gate tables, rank agreement, sensitivity and
budget come from `stagewise.gates` (`compute_gate`, `sensitivity`, `budget`), which are pure
functions over the study and run records. This adapter returns their plain-dict results (the
`stagewise gate --json`, `sensitivity --json` and `budget --json` objects), or None with the
reason where the engine has nothing to say yet (no results, a gate edited after freezing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stagewise.errors import StagewiseError
from stagewise.ledger import FreezeRecord, Ledger, RunRecord
from stagewise.plan import build_plan
from stagewise.study.model import Study


def plan_candidates(study: Study, ledger: Ledger) -> dict[str, tuple[str, ...] | None]:
    plan = build_plan(study, ledger)
    return {sp.stage.stage_id: sp.candidates for sp in plan.stages}


def gate_result(study: Study, ledger: Ledger, gate_id: str) -> tuple[dict[str, Any] | None, str]:
    """The gate object computed read-only (nothing recorded), or (None, why not)."""
    return gate_result_from_runs(
        study,
        ledger.runs(),
        gate_id,
        plan_candidates(study, ledger),
        freeze=ledger.current_freeze(gate_id),
    )


def gate_result_from_runs(
    study: Study,
    runs: Sequence[RunRecord],
    gate_id: str,
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    freeze: FreezeRecord | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """The same object from run records alone (what `verify` rebuilds from a bundle)."""
    try:
        from stagewise.gates.decide import compute_gate
    except ImportError:
        return None, "gate analysis is not installed"
    try:
        return compute_gate(study, gate_id, runs, candidates, freeze=freeze), ""
    except StagewiseError as exc:
        return None, str(exc)


def sensitivity_result(
    study: Study, ledger: Ledger, gate_id: str
) -> tuple[dict[str, Any] | None, str]:
    try:
        from stagewise.gates.sensitivity import sensitivity
    except ImportError:
        return None, "sensitivity analysis is not installed"
    try:
        result = sensitivity(study, ledger, gate_id)
    except StagewiseError as exc:
        return None, str(exc)
    return (result, "") if result.get("rows") else (None, "")


def budget_result(study: Study, ledger: Ledger) -> tuple[dict[str, Any] | None, str]:
    try:
        from stagewise.gates.budget import budget
    except ImportError:
        return None, "budget accounting is not installed"
    try:
        return budget(study, ledger), ""
    except StagewiseError as exc:
        return None, str(exc)


def changes_since_freeze(study: Study, ledger: Ledger, gate_id: str) -> list[str]:
    """How the gate in study.toml differs from its current freeze (empty: unchanged/unfrozen)."""
    if ledger.current_freeze(gate_id) is None:
        return []
    try:
        from stagewise.gates.freeze import changes_since_freeze as changes
    except ImportError:
        return []
    try:
        return list(changes(study, ledger, gate_id))
    except StagewiseError as exc:
        return [str(exc)]
