"""What a walk tells its user: progress and ETA across stages, one line per applied gate."""

from __future__ import annotations

from stagewise.budget_units import format_eta
from stagewise.executors.base import ExecutorEvent, RunOutcome
from stagewise.executors.stage import NullReporter, Reporter, StageState
from stagewise.gates.results import GateResult
from stagewise.plan import StagePlan
from stagewise.study.model import Study


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
