"""`stagewise run DIR`: walk a whole study to its end, keeping the frozen-before-run discipline.

The walk is the manual protocol done in order: for each stage (declared order is a dependency
order, the loader guarantees it), make sure every gate pooling it is frozen (or freeze it with
`freeze=True`), run the stage with `run_stage`, and apply each gate once every stage it pools is
complete, so its decision feeds the next stages. It stops, leaving everything in the ledger, where
a human or another host must act: runs awaiting import from an external host, a gate declared
`decide = "manual"`, a failed run. Because each step is read back from the ledger, running it
again after a kill (or after the human acted) carries on where it stopped: finished runs are not
rerun, frozen gates are not refrozen, decided gates are not reapplied.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from stagewise.budget_units import format_eta
from stagewise.errors import ExecutorError, FrozenRuleMismatch
from stagewise.executors.base import ExecutorEvent, RunOutcome
from stagewise.executors.stage import NullReporter, Reporter, StageState, run_stage
from stagewise.gates.results import GateResult
from stagewise.ledger import Ledger
from stagewise.plan import Plan, StagePlan, build_plan
from stagewise.study.model import Gate, Study

WalkOutcome = Literal["complete", "waiting", "failed", "interrupted", "through", "dry_run"]

EXIT_CODES: dict[str, int] = {
    "complete": 0,
    "waiting": 0,  # nothing is wrong: a human or another host has the next move
    "through": 0,
    "dry_run": 0,
    "failed": 1,
    "interrupted": 130,
}


def freeze_reason(stage_id: str) -> str:
    return f"frozen by stagewise run before stage {stage_id}"


@dataclass
class StudyWalk:
    """What a walk did (or, with `dry_run`, would do); `outcome` says why it ended."""

    study: str
    outcome: WalkOutcome = "complete"
    waiting_for: str | None = None
    stopped_at: str | None = None  # the stage or gate where the walk stopped, if it did
    frozen: list[dict[str, Any]] = field(default_factory=list)
    stages: list[StageState] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)  # gate objects applied now
    awaiting_decision: dict[str, Any] | None = None  # a manual gate's analysis
    plan: list[dict[str, Any]] = field(default_factory=list)  # the dry run's steps
    started: float = field(default_factory=time.monotonic)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "waiting_for": self.waiting_for,
            "stopped_at": self.stopped_at,
            "frozen": self.frozen,
            "stages": [s.as_dict() for s in self.stages],
            "gates_applied": [
                {
                    "gate": g["gate"],
                    "kind": g["kind"],
                    "promoted": [
                        c["condition_id"]
                        for c in g["conditions"]
                        if c["verdict"] in ("promote", "pass")
                    ],
                }
                for g in self.gates
            ],
            "awaiting_decision": self.awaiting_decision,
            "dry_run": self.plan or None,
            "wall_seconds": round(time.monotonic() - self.started, 3),
        }


# ---------------------------------------------------------------------- progress across stages
class WalkReporter:
    """Forwards a stage reporter's calls and knows where the walk is, for an overall ETA.

    The estimate for stages not yet started is their run count (or the count their feeding
    gate fixes) times the budget, spread over the current slots, scaled by how long runs took
    against their budget so far in this walk.
    """

    def __init__(self, inner: Reporter | None = None) -> None:
        self.inner: Reporter = inner or NullReporter()
        self.study: Study | None = None
        self.state: StageState | None = None
        self.position = (0, 0)
        self._later: list[StagePlan] = []
        self._ratio: list[float] = []

    def enter(self, study: Study, index: int, later: list[StagePlan]) -> None:
        """The walk is about to run stage number `index`; `later` are the stages after it."""
        self.study = study
        self.position = (index, len(study.stages))
        self._later = later

    def begin(self, state: StageState) -> None:
        self.state = state
        self.inner.begin(state)

    def event(self, state: StageState, event: ExecutorEvent) -> None:
        if self.study is not None and isinstance(event, RunOutcome) and event.status == "succeeded":
            budget = self.study.stages[event.key.stage].budget_seconds
            if budget > 0 and event.elapsed_seconds:
                self._ratio.append(event.elapsed_seconds / budget)
        self.inner.event(state, event)

    def retry(self, state: StageState, outcome: RunOutcome, note: str) -> None:
        self.inner.retry(state, outcome, note)

    def end(self, state: StageState) -> None:
        self.inner.end(state)

    def stage_eta(self) -> float | None:
        """The stage's own ETA; before any run reports, its queued runs at the budget."""
        if self.state is None:
            return None
        measured = self.state.eta_seconds()
        if measured is not None:
            return measured
        seconds = self.study.stages[self.state.stage].budget_seconds if self.study else 0.0
        if seconds <= 0:
            return None if self.state.pending else 0.0
        return self.state.pending * seconds * self._mean_ratio() / max(1, self.state.slots)

    def _mean_ratio(self) -> float:
        """How long runs took against their budget so far (start-up, evaluation included)."""
        return sum(self._ratio) / len(self._ratio) if self._ratio else 1.0

    def overall_eta(self) -> float | None:
        """Seconds to the end of the walk, or None where a later stage's size is unknown."""
        slots = max(1, self.state.slots if self.state is not None else 1)
        ratio = self._mean_ratio()
        current = self.stage_eta()
        if current is None:
            return None
        rest = 0.0
        for sp in self._later:
            seconds = sp.stage.budget_seconds
            if sp.candidate_count is None or seconds <= 0:
                return None
            runs = sp.candidate_count * len(sp.stage.seeds) * len(sp.stage.hosts)
            rest += runs * seconds * ratio / slots
        return current + rest

    def headline(self) -> str:
        """`walk: stage 2 of 3 (s2), ETA stage 1m20s, overall 4m10s`."""
        index, total = self.position
        name = self.state.stage if self.state is not None else "-"
        return (
            f"walk: stage {index} of {total} ({name}), ETA stage {format_eta(self.stage_eta(), 'unknown')}, "
            f"overall {format_eta(self.overall_eta(), 'unknown')}"
        )


# ---------------------------------------------------------------------- gate narration
def gate_line(result: GateResult) -> str:
    """One line per gate: `gate g1 (promote, 4 host-seed cells): promote b; fail a, c`."""
    groups: dict[str, list[str]] = {}
    for cond in result.conditions:
        # The declared reason of the rule that decided the verdict (structured, not parsed).
        why = cond.verdict.why()
        groups.setdefault(cond.verdict.value, []).append(cond.label + (f" ({why})" if why else ""))
    order = ("promote", "pass", "fail", "stop", "untested", "incomplete")
    body = "; ".join(f"{v} {', '.join(groups[v])}" for v in order if v in groups)
    return f"gate {result.gate} ({result.kind}, {len(result.cells)} host-seed cells): {body}"


# ---------------------------------------------------------------------- the walk
def _complete(ledger: Ledger, sp: StagePlan) -> bool:
    """Every planned run of the stage has a succeeded result."""
    if sp.candidates is None:
        return False
    done = {r.key for r in ledger.runs(stage=sp.stage.stage_id, status="succeeded")}
    return all(key in done for key in sp.runs)


def _ready_gates(study: Study, ledger: Ledger, plan: Plan) -> list[Gate]:
    """Undecided gates whose pooled stages are all complete."""
    return [
        gate
        for gate in study.gates.values()
        if ledger.active_decision(gate.gate_id) is None
        and all(_complete(ledger, plan.stage(s)) for s in gate.stages)
    ]


def _unfrozen(study: Study, ledger: Ledger, gate: Gate) -> str | None:
    from stagewise.gates.freeze import require_frozen

    try:
        require_frozen(study, ledger, gate.gate_id)
    except FrozenRuleMismatch as exc:
        return str(exc)
    return None


def _waiting_for_decision(study: Study, gate: Gate) -> str:
    return (
        f'waiting for a decision on gate {gate.gate_id} (decide = "manual"): record it with '
        f"`stagewise decide {study.root} {gate.gate_id} --promote ID,... --reason ...`, then run "
        f"`stagewise run {study.root}` again"
    )


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
) -> StudyWalk:
    """Walk the study from wherever its ledger stands to its end (or `through` a stage).

    Raises FrozenRuleMismatch (nothing of that stage started) when a gate pooling the next stage
    is not frozen and `freeze` is false. `say` gets one line per step (freeze, gate, wait).
    """
    if through is not None and through not in study.stages:
        raise ExecutorError(
            f"--through {through}: no such stage in {study.study_file}; "
            f"stages: {', '.join(study.stages)}"
        )
    tell = say or (lambda _line: None)
    walk = StudyWalk(study=str(study.root))
    if dry_run:
        return _dry_run(study, ledger, walk, freeze=freeze, through=through)
    view = reporter if isinstance(reporter, WalkReporter) else WalkReporter(reporter)
    order = list(study.stages)

    def settle_gates() -> bool:
        """Apply every gate that is ready; False when a manual gate now awaits a human."""
        from stagewise.gates.decide import apply_gate, result_from_runs

        for gate in _ready_gates(study, ledger, build_plan(study, ledger)):
            if gate.decide == "manual":
                problem = _unfrozen(study, ledger, gate)
                if problem is not None:
                    raise FrozenRuleMismatch(problem)
                analysis = result_from_runs(
                    study, gate.gate_id, ledger.runs(), build_plan(study, ledger).candidates
                )
                walk.awaiting_decision = analysis.to_json()
                tell(gate_line(analysis).replace("gate ", "analysis of gate ", 1))
                walk.outcome = "waiting"
                walk.stopped_at = gate.gate_id
                walk.waiting_for = _waiting_for_decision(study, gate)
                return False
            applied = apply_gate(study, ledger, gate.gate_id)
            walk.gates.append(applied.object)
            tell(gate_line(applied.result))
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
        if _complete(ledger, sp):
            tell(f"stage {stage_id}: all {len(sp.runs)} runs succeeded before")
        else:
            _freeze_before(study, ledger, walk, stage_id, freeze=freeze, tell=tell)
            from stagewise.gates.freeze import require_frozen

            view.enter(study, index, [plan.stage(s) for s in order[index:]])
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
                    f"stage {stage_id}: {failed} run(s) failed; see `stagewise status "
                    f"{study.root}` and the logs under {study.root / 'runs' / stage_id}; "
                    f"rerun them with `stagewise run {study.root} --retry-failed`"
                )
                return walk
            if state.awaiting_import:
                hosts = sorted({k.split("/")[-1] for k in state.awaiting_import})
                walk.outcome = "waiting"
                walk.stopped_at = stage_id
                walk.waiting_for = (
                    f"waiting for {len(state.awaiting_import)} run(s) of stage {stage_id} from "
                    f"host(s) {', '.join(hosts)}: import their results with `stagewise import "
                    f"{study.root} RESULTS.csv`, then run `stagewise run {study.root}` again"
                )
                return walk
        if not settle_gates():
            return walk
        if stage_id == through:
            walk.outcome = "through" if stage_id != order[-1] else "complete"
            walk.stopped_at = stage_id
            return walk
    walk.outcome = "complete"
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

    for gate in study.gates_of_stage(stage_id):
        if ledger.current_freeze(gate.gate_id) is None and freeze:
            outcome = freeze_gate(study, ledger, gate.gate_id, reason=freeze_reason(stage_id))
            walk.frozen.append({"gate": gate.gate_id, "sha256": outcome.record.sha256})
            tell(
                f"gate {gate.gate_id}: frozen before stage {stage_id}, sha256 {outcome.record.sha256[:16]}"
            )
            continue
        problem = _unfrozen(study, ledger, gate)
        if problem is None:
            continue
        if ledger.current_freeze(gate.gate_id) is None:
            raise FrozenRuleMismatch(
                f"stage {stage_id} cannot start: gate {gate.gate_id} is not frozen; freeze it "
                f"with `stagewise freeze {study.root} {gate.gate_id}`, or let the walk freeze "
                f"each gate before its first stage: `stagewise run {study.root} --freeze`"
            )
        raise FrozenRuleMismatch(f"stage {stage_id} cannot start: {problem}")


def _dry_run(
    study: Study,
    ledger: Ledger,
    walk: StudyWalk,
    *,
    freeze: bool,
    through: str | None,
) -> StudyWalk:
    """Every step the walk would take from here, changing nothing."""
    walk.outcome = "dry_run"
    plan = build_plan(study, ledger)
    will_freeze: set[str] = set()
    decided = {g for g in study.gates if ledger.active_decision(g) is not None}
    complete = {sid for sid in study.stages if _complete(ledger, plan.stage(sid))}
    for stage_id in study.stages:
        sp = plan.stage(stage_id)
        for gate in study.gates_of_stage(stage_id):
            if gate.gate_id in will_freeze or stage_id in complete:
                continue
            problem = _unfrozen(study, ledger, gate)
            if problem is None:
                action, note = "frozen", "already frozen"
            elif ledger.current_freeze(gate.gate_id) is None and freeze:
                action, note = "freeze", freeze_reason(stage_id)
                will_freeze.add(gate.gate_id)
            else:
                action, note = "refuse", problem
            walk.plan.append({"step": "gate", "gate": gate.gate_id, "action": action, "note": note})
        row: dict[str, Any] = {
            "step": "stage",
            "stage": stage_id,
            "budget": _budget_text(study, stage_id),
            "seeds": list(sp.stage.seeds),
            "hosts": list(sp.stage.hosts),
        }
        if sp.candidates is None:
            count = sp.candidate_count
            row.update(
                action="after gate",
                candidates=None,
                note=(
                    f"candidates promoted by {sp.stage.candidates.gate}"
                    + (
                        f" ({'at most ' if sp.count_is_upper_bound else ''}{count})"
                        if count
                        else ""
                    )
                ),
                runs=None if count is None else count * len(sp.stage.seeds) * len(sp.stage.hosts),
            )
        else:
            state = run_stage(study, ledger, stage_id, dry_run=True, allow_unfrozen=True)
            counts: dict[str, int] = {}
            for r in state.dry_run:
                counts[r["action"]] = counts.get(r["action"], 0) + 1
            row.update(
                action="complete" if stage_id in complete else "run",
                candidates=list(sp.candidates),
                runs=len(sp.runs),
                counts=counts,
                to_run=[r["run"] for r in state.dry_run if r["action"] == "run"],
                argv=[r["argv"] for r in state.dry_run if r["action"] == "run"],
            )
        walk.plan.append(row)
        for gate in study.gates.values():
            if stage_id != [s for s in study.stages if s in gate.stages][-1]:
                continue  # a gate is applied after the last stage it pools
            if gate.gate_id in decided:
                action = "decided"
            else:
                action = "manual" if gate.decide == "manual" else "apply"
            walk.plan.append({"step": "decide", "gate": gate.gate_id, "action": action})
        if stage_id == through:
            break
    return walk


def _budget_text(study: Study, stage_id: str) -> str:
    from stagewise.budget_units import format_duration

    return format_duration(study.stages[stage_id].budget_seconds)


def dry_run_lines(walk: StudyWalk) -> list[str]:
    """The dry run as a user reads it, one step a line."""
    lines = []
    for step in walk.plan:
        if step["step"] == "gate":
            verb = {"frozen": "is frozen", "freeze": "would be frozen", "refuse": "blocks"}[
                step["action"]
            ]
            lines.append(f"gate {step['gate']} {verb}: {step['note']}")
        elif step["step"] == "stage":
            head = f"stage {step['stage']} ({step['budget']}, seeds {step['seeds']}, hosts {', '.join(step['hosts'])})"
            if step["candidates"] is None:
                runs = "?" if step["runs"] is None else step["runs"]
                lines.append(f"{head}: {step['note']}; {runs} runs")
                continue
            counts = ", ".join(f"{n} {a}" for a, n in sorted(step["counts"].items()))
            lines.append(f"{head}: {step['runs']} runs ({counts})")
            for run, argv in zip(step["to_run"], step["argv"], strict=True):
                lines.append(f"    {run}: {' '.join(argv)}")
        else:
            verb = {
                "decided": "is decided already",
                "manual": "waits for `stagewise decide` (manual)",
                "apply": "would be applied",
            }[step["action"]]
            lines.append(f"gate {step['gate']} {verb}")
    return lines


__all__ = [
    "StudyWalk",
    "WalkReporter",
    "dry_run_lines",
    "freeze_reason",
    "gate_line",
    "run_study",
]
