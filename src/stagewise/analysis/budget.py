"""GPU-hour accounting: budgeted and recorded hours per stage, totals and counterfactuals.

Budgeted GPU-hours of a stage = candidates x seeds x hosts x budget (the paper's definition);
unknown (None) for a budget in tokens or steps, whose hours only the recorded runs tell.
Recorded GPU-hours = the sum of training_seconds / 3600 over the stage's succeeded runs that
report it (None where none do). A counterfactual "continue all candidates of gate G through the
final stages" costs |candidates of G| x (seeds x hosts x budget summed over those stages).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from stagewise.analysis.cells import ResultLike


@dataclass(frozen=True)
class StageBudget:
    stage: str
    candidates: int | None
    seeds: int
    hosts: int
    budget_seconds: float
    budgeted_gpu_hours: float | None
    recorded_gpu_hours: float | None
    runs_recorded: int  # succeeded runs reporting training_seconds

    @property
    def budget_hours(self) -> float:
        return self.budget_seconds / 3600.0

    @property
    def hours_per_candidate(self) -> float:
        return self.seeds * self.hosts * self.budget_hours


def stage_budget(
    stage: str,
    candidates: int | None,
    seeds: int,
    hosts: int,
    budget_seconds: float,
    runs: Iterable[ResultLike],
) -> StageBudget:
    times = [
        r.training_seconds
        for r in runs
        if r.stage == stage and r.status == "succeeded" and r.training_seconds is not None
    ]
    # A token or step budget (budget_seconds 0) has no length in hours before it runs: unknown.
    budgeted = (
        None
        if candidates is None or budget_seconds <= 0
        else candidates * seeds * hosts * budget_seconds / 3600.0
    )
    recorded = math.fsum(times) / 3600.0 if times else None
    return StageBudget(
        stage, candidates, seeds, hosts, budget_seconds, budgeted, recorded, len(times)
    )


def total(values: Sequence[float | None]) -> float | None:
    if any(v is None for v in values):
        return None
    return math.fsum(v for v in values if v is not None)


@dataclass(frozen=True)
class Counterfactual:
    gate: str | None  # None: the executed branch
    scenario: str
    candidates: int | None
    through_stages: tuple[str, ...]
    confirmation_gpu_hours: float | None
    added_vs_executed: float | None


def counterfactual(
    gate: str | None,
    scenario: str,
    candidates: int | None,
    final: Sequence[StageBudget],
    executed: float | None,
) -> Counterfactual:
    per_candidate = math.fsum(s.hours_per_candidate for s in final)
    unknown = candidates is None or any(s.budget_seconds <= 0 for s in final)
    cost = None if unknown or candidates is None else candidates * per_candidate
    added = None if cost is None or executed is None else cost - executed
    return Counterfactual(gate, scenario, candidates, tuple(s.stage for s in final), cost, added)
