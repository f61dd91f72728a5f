"""What a walk tells its user: progress and ETA across stages, one line per applied gate."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

from stagewise.budget_units import format_eta
from stagewise.executors.base import ExecutorEvent, RunOutcome
from stagewise.executors.command import seconds_between
from stagewise.executors.stage import NullReporter, Reporter, StageState
from stagewise.gates.results import GateResult
from stagewise.plan import StagePlan
from stagewise.study.model import Study


class WalkReporter:
    """Forwards a stage reporter's calls and knows where the walk is, for an ETA per stage and
    overall, from the wall time this study's runs really took.

    A run's wall time is modelled as overhead + k x budget: the overhead (process start,
    imports, data, evaluation, checkpoint) is the mean of (wall - training seconds) over the
    study's finished runs, k the mean of training seconds / budget (a run stops after the step
    that crosses its budget). Both are measured on the runs the ledger holds when a stage
    starts and on every run that finishes during the walk. A stage's runs are spread over its
    slots. Before any run finished, a run is assumed to take its budget.
    """

    def __init__(self, inner: Reporter | None = None) -> None:
        self.inner: Reporter = inner or NullReporter()
        self.study: Study | None = None
        self.state: StageState | None = None
        self.position = (0, 0)
        self._later: list[StagePlan] = []
        self._current: StagePlan | None = None
        self._samples: dict[tuple[str, int, str, str], tuple[float, float, float]] = {}
        # (stage, overall ETA when it started, monotonic time): the walk record compares them
        # with how long the rest of the walk really took.
        self.eta_log: list[tuple[str, float | None, float]] = []

    def enter(
        self,
        study: Study,
        index: int,
        later: list[StagePlan],
        runs: Iterable[Any] = (),
        current: StagePlan | None = None,
    ) -> None:
        """The walk is about to run stage number `index` (`current`); `later` are the stages
        after it; `runs` the study's recorded runs (their wall times calibrate the estimate)."""
        self.study = study
        self.position = (index, len(study.stages))
        self._later = later
        self._current = current
        for r in runs:
            self._add_record(r)

    def _add(self, key: tuple[str, int, str, str], wall: float, training: float) -> None:
        if self.study is None or key[0] not in self.study.stages:
            return
        budget = self.study.stages[key[0]].budget_seconds
        if budget > 0 and wall > 0 and training >= 0:
            self._samples[key] = (wall, training, budget)

    def _add_record(self, r: Any) -> None:
        if r.status != "succeeded" or r.training_seconds is None:
            return
        wall = seconds_between(r.started_at, r.finished_at)
        if wall is not None:
            self._add((r.stage, r.seed, r.host, r.condition_id), wall, float(r.training_seconds))

    def begin(self, state: StageState) -> None:
        self.state = state
        self.inner.begin(state)
        self.eta_log.append((state.stage, self.overall_eta(), time.monotonic()))

    def event(self, state: StageState, event: ExecutorEvent) -> None:
        if isinstance(event, RunOutcome) and event.status == "succeeded":
            training = event.summary.get("training_seconds") if event.summary else None
            if isinstance(training, int | float) and event.elapsed_seconds:
                k = event.key
                self._add(
                    (k.stage, k.seed, k.host, k.condition_id), event.elapsed_seconds, training
                )
        self.inner.event(state, event)

    def retry(self, state: StageState, outcome: RunOutcome, note: str) -> None:
        self.inner.retry(state, outcome, note)

    def end(self, state: StageState) -> None:
        self.inner.end(state)

    def run_seconds(
        self, budget_seconds: float, conditions: Iterable[str] | None = None
    ) -> float | None:
        """The expected wall time of one run of this budget (None: a token/step budget).

        With `conditions`, the mean over them, each from its own earlier runs where it has
        some (a bigger model starts and evaluates slower), else from all the study's runs."""
        if budget_seconds <= 0:
            return None
        if not self._samples:
            return budget_seconds

        def model(samples: list[tuple[float, float, float]]) -> float:
            overhead = sum(max(0.0, w - t) for w, t, _b in samples) / len(samples)
            k = sum(t / b for _w, t, b in samples) / len(samples)
            return overhead + k * budget_seconds

        overall = model(list(self._samples.values()))
        wanted = list(conditions or ())
        if not wanted:
            return overall
        per: list[float] = []
        for cid in wanted:
            mine = [v for key, v in self._samples.items() if key[3] == cid]
            per.append(model(mine) if mine else overall)
        return sum(per) / len(per)

    def stage_eta(self) -> float | None:
        """The current stage's time to its end: its running runs' rest, then its queue."""
        if self.state is None or self.study is None:
            return None
        conditions = self._current.candidates if self._current is not None else None
        per_run = self.run_seconds(self.study.stages[self.state.stage].budget_seconds, conditions)
        if per_run is None:
            return self.state.eta_seconds() if self.state.pending or self.state.running else 0.0
        now = time.monotonic()
        slots = max(1, self.state.slots)
        lanes = [max(0.0, per_run - (now - r.started)) for r in self.state.running.values()]
        lanes += [0.0] * max(0, slots - len(lanes))
        # Queued runs start as slots free up: the first free slot takes the next one.
        for _ in range(self.state.pending):
            i = lanes.index(min(lanes))
            lanes[i] += per_run
        return max(lanes, default=0.0)

    def overall_eta(self) -> float | None:
        """Seconds to the end of the walk, or None where a later stage's size is unknown."""
        slots = max(1, self.state.slots if self.state is not None else 1)
        current = self.stage_eta()
        if current is None:
            return None
        rest = 0.0
        for sp in self._later:
            per_run = self.run_seconds(sp.stage.budget_seconds, sp.candidates)
            count = self._expected_count(sp)
            if count is None or per_run is None:
                return None
            runs = count * len(sp.stage.seeds) * len(sp.stage.hosts)
            rest += math.ceil(runs / slots) * per_run
        return current + rest

    def _expected_count(self, sp: StagePlan) -> int | None:
        """The stage's candidates: known, fixed by its gate's rules, or at most what a best_k
        that names roles keeps (k) plus what keep rules keep; None for threshold rules."""
        if sp.candidate_count is not None or self.study is None:
            return sp.candidate_count
        gate_id = sp.stage.candidates.gate
        if gate_id is None:
            return None
        total = 0
        for rule in self.study.gates[gate_id].rules:
            if rule.rule == "best_k":
                total += int(rule.params["k"])
            elif rule.rule == "keep":
                total += sum(
                    1
                    for c in self.study.conditions
                    if c.condition_id in rule.conditions or c.role in rule.roles
                )
            else:
                return None
        return total

    def eta_checks(self, finished: float | None = None) -> list[dict[str, Any]]:
        """Each stage's overall ETA when it started against the time the walk really took."""
        end = time.monotonic() if finished is None else finished
        return [
            {
                "stage": stage,
                "predicted_seconds": None if eta is None else round(eta, 1),
                "actual_seconds": round(end - t, 1),
            }
            for stage, eta, t in self.eta_log
        ]

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
