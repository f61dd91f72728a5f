"""`run_study`: stage after stage, gates frozen before and applied after (see the package doc)."""

from __future__ import annotations

from collections.abc import Callable

from stagewise.errors import ExecutorError, FrozenRuleMismatch
from stagewise.executors.command import missing_data
from stagewise.executors.stage import Reporter, run_stage
from stagewise.ledger import Ledger
from stagewise.plan import build_plan
from stagewise.snapshot import StudySnapshot
from stagewise.study.model import Study
from stagewise.walk.dry_run import dry_run_walk
from stagewise.walk.progress import WalkReporter, gate_line
from stagewise.walk.record import StudyWalk
from stagewise.walk.steps import (
    freeze_reason,
    ready_gates,
    stage_complete,
    unfrozen,
    waiting_for_decision,
)
from stagewise.words import noun_for, plural


def run_study(
    study: Study,
    ledger: Ledger,
    *,
    freeze: bool = False,
    through: str | None = None,
    dry_run: bool = False,
    workers: int | None = None,
    retries: int = 0,
    retry_failed: bool = False,
    reporter: Reporter | None = None,
    wait: bool = True,
    say: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
    rerun: str | None = None,
) -> StudyWalk:
    """Walk the study from wherever its ledger stands to its end (or `through` a stage).

    Raises FrozenRuleMismatch (nothing of that stage started) when a gate pooling the next stage
    is not frozen and `freeze` is false. `say` gets one line per step (freeze, gate, wait).
    `rerun` is the command a failed walk names to retry its failed runs and go on (default
    `stagewise run DIR --retry-failed`; the demo names its own).
    """
    if through is not None and through not in study.stages:
        raise ExecutorError(
            f"--through {through}: no such stage in {study.study_file}; "
            f"stages: {', '.join(study.stages)}"
        )
    tell = say or (lambda _line: None)
    walk = StudyWalk(study=str(study.root))
    if dry_run:
        return dry_run_walk(study, ledger, walk, freeze=freeze, through=through)
    view = reporter if isinstance(reporter, WalkReporter) else WalkReporter(reporter)
    order = list(study.stages)
    # Refuse before freezing anything: a walk that freezes, then fails every run for want of
    # data, leaves frozen gates and failed runs behind for nothing.
    ahead = order[: order.index(through) + 1] if through is not None else order
    first_plan = build_plan(study, ledger)
    problem = missing_data(
        study,
        [s for s in ahead if not stage_complete(ledger, first_plan.stage(s))],
    )
    if problem is not None:
        raise ExecutorError(problem)

    def settle_gates() -> bool:
        """Apply every gate that is ready; False when a manual gate now awaits a human."""
        from stagewise.gates.decide import apply_gate, result_from_runs

        for gate in ready_gates(study, ledger, build_plan(study, ledger)):
            if gate.decide == "manual":
                problem = unfrozen(study, ledger, gate)
                if problem is not None:
                    raise FrozenRuleMismatch(problem)
                # The ledger as it stands after the gates applied above; the analysis is
                # read-only and without its freeze, as the driver has always shown it.
                snap = StudySnapshot.read(study, ledger)
                analysis = result_from_runs(study, gate.gate_id, snap.runs, snap.plan.candidates)
                walk.awaiting_decision = analysis.to_json()
                tell(gate_line(analysis).replace("gate ", "analysis of gate ", 1))
                walk.outcome = "waiting"
                walk.stopped_at = gate.gate_id
                walk.waiting_for = waiting_for_decision(study, gate)
                return False
            applied = apply_gate(study, ledger, gate.gate_id)
            walk.gates.append(applied.object)
            tell(gate_line(applied.result))
            for check in applied.checks:
                if check.flags:
                    tell(
                        f"  flagged {check.run}: {', '.join(check.flags)}: {'; '.join(check.notes)}"
                    )
        return True

    # Gates left ready by an earlier walk (killed right after its stage) are applied first.
    if not settle_gates():
        return walk
    for index, stage_id in enumerate(order, start=1):
        plan = build_plan(study, ledger)
        sp = plan.stage(stage_id)
        if sp.candidates is None:
            gate_id = sp.stage.candidates.gate
            walk.outcome = "waiting"
            walk.stopped_at = stage_id
            walk.waiting_for = (
                f"waiting for gate {gate_id}, which feeds stage {stage_id} and is not decided"
            )
            return walk
        if stage_complete(ledger, sp):
            tell(f"stage {stage_id}: all {len(sp.runs)} runs succeeded before")
        else:
            _freeze_before(study, ledger, walk, stage_id, freeze=freeze, tell=tell)
            from stagewise.gates.freeze import require_frozen

            view.enter(
                study,
                index,
                [plan.stage(s) for s in ahead[index:]],
                ledger.runs(status="succeeded"),
                current=sp,
            )
            state = run_stage(
                study,
                ledger,
                stage_id,
                workers=workers,
                retries=retries,
                retry_failed=retry_failed,
                reporter=view,
                wait=wait,
                notify=notify,
                frozen_check=require_frozen,
            )
            walk.stages.append(state)
            if state.stopped:
                walk.outcome = "interrupted"
                walk.stopped_at = stage_id
                return walk
            if state.failed or state.previously_failed:
                failed = len(state.failed) + len(state.previously_failed)
                walk.outcome = "failed"
                walk.stopped_at = stage_id
                walk.waiting_for = (
                    f"stage {stage_id}: {plural(failed, 'run')} failed; see `stagewise status "
                    f"{study.root}` and the logs under {study.root / 'runs' / stage_id}; "
                    f"once the cause is fixed, rerun them and go on with "
                    f"`{rerun or f'stagewise run {study.root} --retry-failed'}`"
                )
                return walk
            if state.awaiting_import:
                hosts = sorted({k.split("/")[-1] for k in state.awaiting_import})
                walk.outcome = "waiting"
                walk.stopped_at = stage_id
                walk.waiting_for = (
                    f"waiting for {plural(len(state.awaiting_import), 'run')} of stage {stage_id} "
                    f"from {noun_for(len(hosts), 'host')} {', '.join(hosts)}: import their results with `stagewise import "
                    f"{study.root} RESULTS.csv`, then run `stagewise run {study.root}` again"
                )
                return walk
        if not settle_gates():
            return walk
        if stage_id == through:
            walk.outcome = "through" if stage_id != order[-1] else "complete"
            walk.stopped_at = stage_id
            walk.eta_checks = view.eta_checks()
            return walk
    walk.outcome = "complete"
    walk.eta_checks = view.eta_checks()
    return walk


def _freeze_before(
    study: Study,
    ledger: Ledger,
    walk: StudyWalk,
    stage_id: str,
    *,
    freeze: bool,
    tell: Callable[[str], None],
) -> None:
    """Every gate pooling the stage frozen as written, or the stage does not start."""
    from stagewise.gates.freeze import freeze as freeze_gate
    from stagewise.gates.throughput import short_budgets

    for gate in study.gates_of_stage(stage_id):
        if ledger.current_freeze(gate.gate_id) is None and freeze:
            for short in short_budgets(study, ledger, gate.gate_id):
                tell(f"warning (never blocks the freeze): {short.text()}")
            outcome = freeze_gate(study, ledger, gate.gate_id, reason=freeze_reason(stage_id))
            walk.frozen.append({"gate": gate.gate_id, "sha256": outcome.record.sha256})
            tell(
                f"gate {gate.gate_id}: frozen before stage {stage_id}, sha256 {outcome.record.sha256[:16]}"
            )
            continue
        problem = unfrozen(study, ledger, gate)
        if problem is None:
            continue
        if ledger.current_freeze(gate.gate_id) is None:
            raise FrozenRuleMismatch(
                f"stage {stage_id} cannot start: gate {gate.gate_id} is not frozen; freeze it "
                f"with `stagewise freeze {study.root} {gate.gate_id}`, or let the walk freeze "
                f"each gate before its first stage: `stagewise run {study.root} --freeze`"
            )
        raise FrozenRuleMismatch(f"stage {stage_id} cannot start: {problem}")
