"""Run policies over replays of a curves table and score them against the truth.

Truth = the condition with the best mean over every seed and host at the final level. Per
replay, a policy's final choice is the best mean at the final level over the replay's final
cells among the conditions it ran there. Scores, each with a 95% interval over replays:
p_retain (truth ran at the final level), p_select (the choice is the truth), mean_regret (true
final mean of the choice minus the truth's), gpu_hours (restart semantics: sum over runs of
budget_seconds / 3600) and cost_vs_final_only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stagewise.backtest.draw import Draws, LevelDraw
from stagewise.backtest.policies.base import FloatArray, IntArray, Policy, ReplayContext, best_first
from stagewise.backtest.table import CurvesError, CurvesTable

CHUNK = 2500  # replays per block: bounds memory and paces the progress bar
Z95 = 1.959963984540054


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_json(self) -> list[float]:
        return [self.low, self.high]


def wilson(successes: float, n: int) -> Interval:
    """95% Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal one)."""
    if n == 0:
        return Interval(math.nan, math.nan)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high)


def mean_interval(values: FloatArray) -> Interval:
    """95% normal interval of a mean over replays."""
    n = len(values)
    mean = float(values.mean())
    if n < 2:
        return Interval(mean, mean)
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(n)
    return Interval(mean - half, mean + half)


@dataclass(frozen=True)
class Truth:
    condition_id: str
    final_budget_seconds: float
    mean_val_bpb: float

    def to_json(self) -> dict[str, Any]:
        return {
            "condition_id": self.condition_id,
            "final_budget_seconds": self.final_budget_seconds,
            "mean_val_bpb": self.mean_val_bpb,
        }


@dataclass(frozen=True)
class PolicyResult:
    policy: str
    params: dict[str, float | int]
    label: str
    replays: int
    p_retain: float
    p_retain_interval: Interval
    p_select: float
    p_select_interval: Interval
    mean_regret: float
    mean_regret_interval: Interval
    gpu_hours: float
    gpu_hours_interval: Interval
    cost_vs_final_only: float
    cost_vs_final_only_interval: Interval
    runs_per_level: tuple[float, ...]  # mean runs (conditions x cells) at each level
    chosen: dict[str, float]  # share of replays choosing each condition
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "params": dict(self.params),
            "label": self.label,
            "p_retain": self.p_retain,
            "p_retain_interval": self.p_retain_interval.to_json(),
            "p_select": self.p_select,
            "p_select_interval": self.p_select_interval.to_json(),
            "mean_regret": self.mean_regret,
            "mean_regret_interval": self.mean_regret_interval.to_json(),
            "gpu_hours": self.gpu_hours,
            "gpu_hours_interval": self.gpu_hours_interval.to_json(),
            "cost_vs_final_only": self.cost_vs_final_only,
            "cost_vs_final_only_interval": self.cost_vs_final_only_interval.to_json(),
            "runs_per_level": list(self.runs_per_level),
            "chosen": dict(self.chosen),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class BacktestResult:
    truth: Truth
    replays: int
    seed: int
    cells_per_level: tuple[int, ...]
    table: dict[str, Any]
    final_only_gpu_hours: float
    policies: tuple[PolicyResult, ...]
    skipped: tuple[dict[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "truth": self.truth.to_json(),
            "replays": self.replays,
            "seed": self.seed,
            "cells_per_level": list(self.cells_per_level),
            "budgets_seconds": list(self.table["budgets_seconds"]),
            "table": dict(self.table),
            "final_only_gpu_hours": self.final_only_gpu_hours,
            "policies": [p.to_json() for p in self.policies],
            "skipped": [dict(s) for s in self.skipped],
        }


@dataclass(frozen=True)
class Scored:
    """Per-replay outcomes of one policy (before summarising)."""

    retain: np.ndarray
    select: np.ndarray
    regret: FloatArray
    hours: FloatArray
    runs_per_level: FloatArray
    choice: IntArray


def slice_draws(draws: Draws, start: int, stop: int) -> Draws:
    levels = tuple(
        LevelDraw(
            lv.budget_seconds, lv.values[start:stop], lv.hosts[start:stop], lv.seeds[start:stop]
        )
        for lv in draws.levels
    )
    return replace(draws, replays=stop - start, levels=levels)


def score(
    ctx: ReplayContext, runs: Sequence[IntArray], true_means: FloatArray, truth: int
) -> Scored:
    if len(runs) != ctx.n_levels:
        raise CurvesError(f"internal: a policy returned {len(runs)} levels for {ctx.n_levels}")
    final = runs[-1] > 0
    # A policy that reached no condition to the final level (ASHA with few conditions and many
    # rungs can stall) chooses the best at the highest level it reached; it retains nothing.
    choice = np.full(ctx.replays, -1, dtype=np.int64)
    for li in range(ctx.n_levels - 1, -1, -1):
        ran = runs[li] > 0
        open_ = (choice < 0) & ran.any(axis=1)
        if open_.any():
            best = best_first(ctx.draws.levels[li], ran, ctx.cid_order)[:, 0]
            choice = np.where(open_, best, choice)
    if (choice < 0).any():
        raise CurvesError("internal: a policy ran nothing at all in some replay")
    cells = np.asarray(ctx.draws.cells, dtype=np.float64)
    budgets = np.asarray(ctx.draws.budgets, dtype=np.float64)
    counts = np.stack([r.sum(axis=1) for r in runs], axis=1).astype(np.float64)  # [r, level]
    hours = (counts * cells * budgets).sum(axis=1) / 3600.0
    return Scored(
        retain=final[:, truth],
        select=choice == truth,
        regret=true_means[choice] - true_means[truth],
        hours=hours,
        runs_per_level=counts * cells,
        choice=choice,
    )


def summarise(
    policy: Policy, parts: list[Scored], final_only_hours: float, conditions: Sequence[str]
) -> PolicyResult:
    retain = np.concatenate([p.retain for p in parts])
    select = np.concatenate([p.select for p in parts])
    regret = np.concatenate([p.regret for p in parts])
    hours = np.concatenate([p.hours for p in parts])
    per_level = np.concatenate([p.runs_per_level for p in parts]).mean(axis=0)
    choice = np.concatenate([p.choice for p in parts])
    n = len(retain)
    ratio = hours / final_only_hours
    shares = np.bincount(choice, minlength=len(conditions)) / n
    return PolicyResult(
        policy=policy.name,
        params=dict(policy.params),
        label=policy.label,
        replays=n,
        p_retain=float(retain.mean()),
        p_retain_interval=wilson(float(retain.sum()), n),
        p_select=float(select.mean()),
        p_select_interval=wilson(float(select.sum()), n),
        mean_regret=float(regret.mean()),
        mean_regret_interval=mean_interval(regret),
        gpu_hours=float(hours.mean()),
        gpu_hours_interval=mean_interval(hours),
        cost_vs_final_only=float(ratio.mean()),
        cost_vs_final_only_interval=mean_interval(ratio),
        runs_per_level=tuple(float(x) for x in per_level),
        chosen={conditions[i]: float(s) for i, s in enumerate(shares) if s > 0},
        notes=tuple(getattr(policy, "notes", ())),
    )


def backtest(
    table: CurvesTable,
    policies: Sequence[Policy],
    *,
    replays: int = 1000,
    seed: int = 0,
    cells: Sequence[int] | None = None,
    study: Any = None,
    progress: Callable[[int], None] | None = None,
    draws: Draws | None = None,
) -> BacktestResult:
    """Every policy on the same draws; `progress(n)` is told of each block of replays done."""
    from stagewise.backtest.draw import draw

    if len(table.levels) < 2:
        raise CurvesError(
            f"{table.source}: one budget level ({table.budgets[0]:g}s); a back-test needs at least 2"
        )
    if not policies:
        raise CurvesError("--policies: no policy to run")
    draws = draws or draw(table, replays, cells, seed=seed)
    true_means = table.true_means()
    truth = table.truth()
    final_only_hours = len(table.conditions) * draws.cells[-1] * table.budgets[-1] / 3600.0
    scored: dict[int, list[Scored]] = {i: [] for i in range(len(policies))}
    for chunk, start in enumerate(range(0, draws.replays, CHUNK)):
        stop = min(draws.replays, start + CHUNK)
        ctx = ReplayContext(slice_draws(draws, start, stop), seed, study, chunk)
        for i, policy in enumerate(policies):
            scored[i].append(score(ctx, policy.run(ctx), true_means, truth))
            if progress is not None:
                progress(stop - start)
    results = tuple(
        summarise(p, scored[i], final_only_hours, table.conditions) for i, p in enumerate(policies)
    )
    return BacktestResult(
        truth=Truth(table.conditions[truth], table.budgets[-1], float(true_means[truth])),
        replays=draws.replays,
        seed=seed,
        cells_per_level=draws.cells,
        table=table.describe(),
        final_only_gpu_hours=final_only_hours,
        policies=results,
    )


__all__ = [
    "BacktestResult",
    "Interval",
    "PolicyResult",
    "Truth",
    "backtest",
    "mean_interval",
    "score",
    "wilson",
]
