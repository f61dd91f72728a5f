"""Where a study stands: per stage, the runs by state; per gate, its freeze and decision."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stagewise.analysis.run_checks import check_runs, flag_counts, flagged
from stagewise.errors import StagewiseError
from stagewise.executors.ownership import owner_alive
from stagewise.gates.freeze import changes_since_freeze, recipes_summary
from stagewise.job_status import job_rows
from stagewise.ledger import Ledger
from stagewise.ledger.records import RUN_STATES, RunRecord
from stagewise.snapshot import GateSnapshot, StudySnapshot
from stagewise.study.model import Study


def _retrying(snap: StudySnapshot, records: Sequence[RunRecord]) -> dict[str, list[dict[str, Any]]]:
    """Per stage, the running runs whose current attempt is a retry (`run.retrying` events
    name the attempt they start; the executor's own reruns keep the attempt number)."""
    running = {str(rec.key): rec for rec in records if rec.status == "running"}
    found: dict[str, dict[str, Any]] = {}
    for event in snap.events_of("run.retrying"):
        rec = running.get(event.subject)
        if rec is not None and event.payload.get("attempt") == rec.attempts:
            found[event.subject] = {
                "run": event.subject,
                "attempt": rec.attempts,
                "after": event.payload.get("after"),
                "note": event.payload.get("note"),
            }
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for subject, row in sorted(found.items()):
        by_stage.setdefault(running[subject].stage, []).append(row)
    return by_stage


def _waiting(snap: StudySnapshot) -> dict[str, list[str]]:
    """Per stage, the notices its driver has raised and not withdrawn, while it is alive."""
    current: dict[tuple[str, str], Any] = {}
    for event in snap.events_of("executor.notice"):
        current[(event.subject, str(event.payload.get("topic")))] = event.payload
    by_stage: dict[str, list[str]] = {}
    for (stage, _topic), payload in sorted(current.items()):
        text = payload.get("text")
        if text and owner_alive(str(payload.get("owner") or "")) is not False:
            by_stage.setdefault(stage, []).append(str(text))
    return by_stage


def edits_since_freeze(study: Study, ledger: Ledger, gate_id: str) -> list[str]:
    """What differs from the gate's freeze, reported, never raised (status and validate)."""
    try:
        return changes_since_freeze(study, ledger, gate_id)
    except StagewiseError as exc:
        return [f"cannot compare with the freeze: {exc}"]


def _edits(view: GateSnapshot) -> list[str]:
    """`edits_since_freeze` of a snapshot's gate."""
    try:
        return list(view.require_changes_since_freeze())
    except StagewiseError as exc:
        return [f"cannot compare with the freeze: {exc}"]


def study_status(study: Study, ledger: Ledger) -> dict[str, Any]:
    """The `stagewise status --json` object of the study as its ledger holds it now, with its
    cluster jobs as the scheduler sees them."""
    return status_of(StudySnapshot.read(study, ledger), jobs=job_rows(ledger))


@dataclass(frozen=True)
class StageRuns:
    """How many runs of a stage are in each state (`status --json`'s `runs` of the stage)."""

    stage: str
    candidate_source: str  # where its candidates come from, in words
    planned_runs: int | None  # None while its feeding gate is undecided
    runs: Mapping[str, int]  # every RUN_STATES key; planned runs without a row are pending

    def count(self, state: str) -> int:
        return self.runs.get(state, 0)

    @property
    def recorded(self) -> int:
        """Runs with a ledger row that is not pending."""
        return sum(v for k, v in self.runs.items() if k != "pending")


def stage_runs(snap: StudySnapshot) -> tuple[StageRuns, ...]:
    """Each planned stage's runs by state, in plan order."""
    by_stage: dict[str, Counter[str]] = {}
    for rec in snap.runs:
        by_stage.setdefault(rec.stage, Counter())[rec.status] += 1
    out = []
    for sp in snap.plan.stages:
        counts = by_stage.get(sp.stage.stage_id, Counter())
        planned = len(sp.runs) if sp.known else None
        # Planned runs with no ledger row yet are pending too.
        pending_extra = max(0, (planned or 0) - sum(counts.values()))
        runs = {state: counts.get(state, 0) for state in RUN_STATES}
        runs["pending"] += pending_extra
        out.append(StageRuns(sp.stage.stage_id, sp.stage.candidates.describe(), planned, runs))
    return tuple(out)


def status_of(snap: StudySnapshot, jobs: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The `stagewise status --json` object of a snapshot (no gate is evaluated for it);
    `jobs`: the cluster jobs carrying runs (`job_status.job_rows`)."""
    study, plan, records = snap.study, snap.plan, snap.runs
    retrying = _retrying(snap, records)
    waiting = _waiting(snap)
    budgets = {sid: st.budget_seconds for sid, st in study.stages.items()}
    checks = check_runs(records, budgets, study.min_steps)
    stages = []
    for sp, counted in zip(plan.stages, stage_runs(snap), strict=True):
        planned, runs = counted.planned_runs, dict(counted.runs)
        host_kinds = sorted({study.hosts[h].executor for h in sp.stage.hosts})
        stages.append(
            {
                "stage": sp.stage.stage_id,
                "budget_seconds": sp.stage.budget_seconds,
                "seeds": list(sp.stage.seeds),
                "hosts": list(sp.stage.hosts),
                "executors": host_kinds,
                "candidates": list(sp.candidates) if sp.candidates is not None else None,
                "candidate_source": sp.stage.candidates.describe(),
                "planned_runs": planned,
                "runs": runs,
                "complete": planned is not None and runs["succeeded"] == planned,
                # Running runs that are a rerun after a failure or a fault (the cause before).
                "retrying": retrying.get(sp.stage.stage_id, []),
                # What the stage's live driver is waiting for (a block without a node, ...).
                "waiting": waiting.get(sp.stage.stage_id, []),
                "flags": flag_counts(c for c in checks if c.stage == sp.stage.stage_id),
            }
        )
    gates = []
    for view in snap.gates:
        gate, freezes, decision = view.gate, view.freezes, view.active
        gates.append(
            {
                "gate": gate.gate_id,
                "kind": gate.kind,
                "stages": list(gate.stages),
                "frozen": bool(freezes),
                "frozen_sha256": freezes[-1].sha256 if freezes else None,
                "frozen_at": freezes[-1].frozen_at if freezes else None,
                "post_hoc": freezes[-1].post_hoc if freezes else None,
                "amendments": sum(1 for f in freezes if f.kind == "amend"),
                # condition -> frozen recipe sha256, or "recipes not frozen (format 1)"
                "recipes": recipes_summary(freezes[-1]) if freezes else None,
                # what was edited since the freeze (gate and run refuse until it is amended)
                "changed_since_freeze": _edits(view) if freezes else [],
                "decision": None
                if decision is None
                else {
                    "kind": decision.kind,
                    "manual": decision.manual,
                    "promoted": list(decision.promoted),
                    "reason": decision.reason,
                    "source": decision.source,
                    "decided_at": decision.decided_at,
                },
            }
        )
    problems = snap.integrity_problems
    return {
        "study": study.name,
        "reference": study.reference,
        "ledger_schema": snap.schema_version,
        "events": len(snap.events),
        # chain_ok covers the links and the runs/freezes/decisions tables checked against them.
        "chain_ok": not problems,
        "chain_head": snap.head,
        "first_broken_link": problems[0] if problems else None,
        "chain_problems": list(problems),
        "stages": stages,
        "gates": gates,
        # Runs carried by cluster jobs (Slurm): job id and the scheduler's state.
        "jobs": list(jobs),
        # Succeeded runs that cannot mean much (analysis.run_checks): flagged, never hidden.
        "min_steps": study.min_steps,
        "flagged_runs": [c.to_json() for c in flagged(checks)],
    }
