"""Run policies over replays of a curves table and score them against the truth.

Truth = the condition with the best mean over every seed and host (or run) at the final level.
Per replay, a policy's final choice is the best mean at the final level over the replay's
final cells among the conditions it ran there. Scores, each with a 95% interval: p_retain
(truth ran at the final level), p_select (the choice is the truth), mean_regret (true final
mean of the choice minus the truth's), cost and cost_vs_final_only under the chosen cost model:

- `restart`: every level a candidate reaches is charged at that level's full budget (each stage
  trains fresh runs, the paper's protocol);
- `continue`: only the increment is charged (promotion continues the same run, as ASHA and
  Hyperband assume): a run that reached level l cost B_l in all, not B_1 + ... + B_l.

Cost is in the table's budget unit (steps, tokens or seconds) and in GPU-hours when seconds
convert it (a seconds table, or `seconds_per_unit`). Intervals use at most as many replays as
there are distinct draws of cells: a table with few runs cannot give a narrower interval by
repeating the same draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from stagewise.backtest.draw import Draws, LevelDraw
from stagewise.backtest.policies.base import (
    BoolArray,
    FloatArray,
    IntArray,
    Policy,
    ReplayContext,
    best_first,
)
from stagewise.backtest.table import CurvesError, CurvesTable

CHUNK = 2500  # replays per block: bounds memory and paces the progress bar
Z95 = 1.959963984540054
COST_MODELS = ("restart", "continue")


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_json(self) -> list[float]:
        return [self.low, self.high]


def wilson(successes: float, n: float) -> Interval:
    """95% Wilson score interval of a proportion (sensible at 0 and 1, unlike the normal one)."""
    if n <= 0:
        return Interval(math.nan, math.nan)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(max(0.0, p * (1 - p) / n + Z95**2 / (4 * n * n))) / denom
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return Interval(low, high)


def mean_interval(values: FloatArray, n_eff: float | None = None) -> Interval:
    """95% normal interval of a mean over replays (`n_eff`: the independent ones among them)."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan)
    mean = float(values.mean())
    n_eff = n if n_eff is None else min(float(n), n_eff)
    if n < 2 or n_eff < 2:
        return Interval(mean, mean)
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(n_eff)
    return Interval(mean - half, mean + half)


@dataclass(frozen=True)
class Truth:
    condition_id: str
    final_budget: float
    mean_value: float
    unit: str = "seconds"
    metric: str = "val_bpb"

    @property
    def final_budget_seconds(self) -> float:
        return self.final_budget

    @property
    def mean_val_bpb(self) -> float:
        return self.mean_value

    def to_json(self) -> dict[str, Any]:
        return {
            "condition_id": self.condition_id,
            # The original keys, kept for old readers; the unit and metric say what they hold.
            "final_budget_seconds": self.final_budget,
            "mean_val_bpb": self.mean_value,
            "final_budget": self.final_budget,
            "budget_unit": self.unit,
            "metric": self.metric,
            "mean_value": self.mean_value,
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
    gpu_hours: float | None  # None when the table's unit cannot be converted to seconds
    gpu_hours_interval: Interval | None
    cost_vs_final_only: float
    cost_vs_final_only_interval: Interval
    runs_per_level: tuple[float, ...]  # mean runs (conditions x cells) at each level
    chosen: dict[str, float]  # share of replays choosing each condition
    notes: tuple[str, ...] = ()
    cost: float = math.nan  # mean per replay, in the table's budget unit
    cost_interval: Interval = Interval(math.nan, math.nan)
    unknown: int = 0  # replays that needed a censored value (left out of every score)

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
            "gpu_hours_interval": (
                None if self.gpu_hours_interval is None else self.gpu_hours_interval.to_json()
            ),
            "cost_vs_final_only": self.cost_vs_final_only,
            "cost_vs_final_only_interval": self.cost_vs_final_only_interval.to_json(),
            "cost": self.cost,
            "cost_interval": self.cost_interval.to_json(),
            "runs_per_level": list(self.runs_per_level),
            "chosen": dict(self.chosen),
            "notes": list(self.notes),
            "replays": self.replays,
            "unknown_replays": self.unknown,
        }


@dataclass(frozen=True)
class BacktestResult:
    truth: Truth
    replays: int
    seed: int
    cells_per_level: tuple[int, ...]
    table: dict[str, Any]
    final_only_gpu_hours: float | None
    policies: tuple[PolicyResult, ...]
    skipped: tuple[dict[str, str], ...] = ()
    cost_model: str = "restart"
    budget_unit: str = "seconds"
    metric: str = "val_bpb"
    final_only_cost: float = math.nan
    seconds_per_unit: float | None = None
    distinct_draws: int = 0
    draws_enumerated: bool = False
    warnings: tuple[str, ...] = ()
    evidence: dict[str, Any] | None = None  # rank correlations and decision accuracy per level

    @property
    def cost_unit(self) -> str:
        """What `cost` counts: GPU-hours when convertible, else the table's budget unit."""
        return "GPU-hours" if self.final_only_gpu_hours is not None else self.budget_unit

    def cost_of(self, p: PolicyResult) -> float:
        return p.gpu_hours if p.gpu_hours is not None else p.cost

    def cost_of_final(self) -> float:
        """final_only's cost, in `cost_unit`."""
        if self.final_only_gpu_hours is not None:
            return self.final_only_gpu_hours
        return self.final_only_cost

    def to_json(self) -> dict[str, Any]:
        out = {
            "truth": self.truth.to_json(),
            "replays": self.replays,
            "seed": self.seed,
            "cells_per_level": list(self.cells_per_level),
            "budgets_seconds": list(self.table["budgets_seconds"]),
            "budgets": list(self.table["budgets"]),
            "budget_unit": self.budget_unit,
            "metric": self.metric,
            "curve_kind": self.table.get("curve_kind"),
            "pairing": self.table.get("pairing"),
            "cost_model": self.cost_model,
            "cost_unit": self.cost_unit,
            "seconds_per_unit": self.seconds_per_unit,
            "distinct_draws": self.distinct_draws,
            "draws_enumerated": self.draws_enumerated,
            "warnings": list(self.warnings),
            "table": dict(self.table),
            "final_only_gpu_hours": self.final_only_gpu_hours,
            "final_only_cost": self.final_only_cost,
            "policies": [p.to_json() for p in self.policies],
            "skipped": [dict(s) for s in self.skipped],
        }
        if self.evidence is not None:
            out["evidence"] = self.evidence
        return out


@dataclass(frozen=True)
class Scored:
    """Per-replay outcomes of one policy (before summarising)."""

    retain: np.ndarray
    select: np.ndarray
    regret: FloatArray
    cost: FloatArray  # in the table's budget unit
    runs_per_level: FloatArray
    choice: IntArray
    known: BoolArray  # False: the policy needed a censored value in this replay


def slice_draws(draws: Draws, start: int, stop: int) -> Draws:
    levels = tuple(
        LevelDraw(
            lv.budget,
            lv.values[start:stop],
            lv.hosts[start:stop],
            lv.seeds[start:stop],
            None if lv.missing is None else lv.missing[start:stop],
        )
        for lv in draws.levels
    )
    return replace(draws, replays=stop - start, levels=levels)


def default_starts(runs: Sequence[IntArray]) -> list[IntArray]:
    """Trials that start fresh at each level when every trial starts at a condition's first
    level and goes on while it is promoted: new runs only where the count grows over the last
    level the condition ran at (top_k's jump from the first level to the last continues)."""
    out = [runs[0].copy()]
    last = runs[0].copy()  # trials at the last level each condition ran at
    for li in range(1, len(runs)):
        out.append(np.maximum(runs[li] - last, 0))
        last = np.where(runs[li] > 0, runs[li], last)
    return out


def run_costs(
    runs: Sequence[IntArray],
    starts: Sequence[IntArray],
    cells: Sequence[int],
    budgets: Sequence[float],
    model: str,
) -> FloatArray:
    """Cost per replay, in the budget unit, of runs[l][r, c] trials under `model`.

    restart: each trial at level l costs cells_l x B_l. continue: a trial that goes on from
    the last level its condition ran at (p) costs only the increment on the cells it continues
    (min(cells_l, cells_p) x (B_l - B_p)), and any extra cells it adds start from zero (x B_l).
    """
    total = np.zeros(runs[0].shape[0], dtype=np.float64)
    prev_budget = np.zeros(runs[0].shape, dtype=np.float64)
    prev_cells = np.zeros(runs[0].shape, dtype=np.float64)
    for li, (ran, new) in enumerate(zip(runs, starts, strict=True)):
        k, budget = float(cells[li]), float(budgets[li])
        if model == "restart":
            total += ran.sum(axis=1) * k * budget
            continue
        cont = (ran - new).astype(np.float64)
        kept = np.minimum(k, prev_cells)
        added = np.maximum(k - prev_cells, 0.0)
        per = new * k * budget + cont * (kept * (budget - prev_budget) + added * budget)
        total += per.sum(axis=1)
        prev_budget = np.where(ran > 0, budget, prev_budget)
        prev_cells = np.where(ran > 0, k, prev_cells)
    return total


def score(
    ctx: ReplayContext,
    runs: Sequence[IntArray],
    true_means: FloatArray,
    truth: int,
    *,
    starts: Sequence[IntArray] | None = None,
    cost_model: str = "restart",
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
    known = np.ones(ctx.replays, dtype=bool)
    for li, lv in enumerate(ctx.draws.levels):
        if lv.missing is not None:
            known &= ~((runs[li] > 0) & lv.missing).any(axis=1)
    cells = ctx.draws.cells
    budgets = ctx.draws.budgets
    counts = np.stack([r.sum(axis=1) for r in runs], axis=1).astype(np.float64)  # [r, level]
    cost = run_costs(runs, starts or default_starts(runs), cells, budgets, cost_model)
    return Scored(
        retain=final[:, truth],
        select=choice == truth,
        regret=true_means[choice] - true_means[truth],
        cost=cost,
        runs_per_level=counts * np.asarray(cells, dtype=np.float64),
        choice=choice,
        known=known,
    )


def summarise(
    policy: Policy,
    parts: list[Scored],
    final_only_cost: float,
    conditions: Sequence[str],
    *,
    distinct: int,
    hours_per_unit: float | None,
) -> PolicyResult:
    known = np.concatenate([p.known for p in parts])
    retain = np.concatenate([p.retain for p in parts])[known]
    select = np.concatenate([p.select for p in parts])[known]
    regret = np.concatenate([p.regret for p in parts])[known]
    cost = np.concatenate([p.cost for p in parts])[known]
    per_level = np.concatenate([p.runs_per_level for p in parts])[known]
    choice = np.concatenate([p.choice for p in parts])[known]
    n = len(retain)
    # The replays resample only `distinct` situations: no interval may count more than those.
    # When they are so few that every one was replayed many times, the numbers are exact
    # averages over all of them (an enumeration), and the interval is that point.
    exact = enumerated(distinct, len(known))
    n_eff = float(min(n, distinct)) if distinct else float(n)
    ratio = cost / final_only_cost
    shares = np.bincount(choice, minlength=len(conditions)) / max(n, 1)
    nan = math.nan

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if n else nan

    def prop(x: np.ndarray) -> Interval:
        if not n:
            return Interval(nan, nan)
        return Interval(mean(x), mean(x)) if exact else wilson(mean(x) * n_eff, n_eff)

    def spread(x: np.ndarray) -> Interval:
        return Interval(mean(x), mean(x)) if exact and n else mean_interval(x, n_eff)

    hours = None if hours_per_unit is None else cost * hours_per_unit
    return PolicyResult(
        policy=policy.name,
        params=dict(policy.params),
        label=policy.label,
        replays=len(known),
        p_retain=mean(retain),
        p_retain_interval=prop(retain),
        p_select=mean(select),
        p_select_interval=prop(select),
        mean_regret=mean(regret),
        mean_regret_interval=spread(regret),
        gpu_hours=None if hours is None else mean(hours),
        gpu_hours_interval=None if hours is None else spread(hours),
        cost_vs_final_only=mean(ratio),
        cost_vs_final_only_interval=spread(ratio),
        runs_per_level=tuple(float(x) for x in (per_level.mean(axis=0) if n else [])),
        chosen={conditions[i]: float(s) for i, s in enumerate(shares) if s > 0},
        notes=tuple(getattr(policy, "notes", ())),
        cost=mean(cost),
        cost_interval=spread(cost),
        unknown=int((~known).sum()),
    )


ENUMERATE_FACTOR = 10  # replays per distinct draw above which the draws count as enumerated


def enumerated(distinct: int, replays: int) -> bool:
    """Whether the replays went through every distinct draw the table allows (each ~10+ times)."""
    return distinct > 0 and distinct * ENUMERATE_FACTOR <= replays


def resolve_cost_model(table: CurvesTable, cost_model: str | None) -> str:
    """The cost model asked for, or the table's natural one: `continue` for within-run curves."""
    if cost_model is None:
        return "continue" if table.curve_kind == "within_run" else "restart"
    if cost_model not in COST_MODELS:
        raise CurvesError(f"--cost: expected {' or '.join(COST_MODELS)}, but got {cost_model!r}")
    return cost_model


def hours_per_unit(table: CurvesTable, seconds_per_unit: float | None) -> float | None:
    """GPU-hours per budget unit: 1/3600 for seconds, else only when seconds_per_unit says."""
    if table.unit == "seconds":
        return 1.0 / 3600.0
    if seconds_per_unit is None:
        return None
    if not (seconds_per_unit > 0 and math.isfinite(seconds_per_unit)):
        raise CurvesError(
            f"--seconds-per-unit: expected a positive number, but got {seconds_per_unit!r}"
        )
    return seconds_per_unit / 3600.0


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
    cost_model: str | None = None,
    seconds_per_unit: float | None = None,
    evidence: bool = True,
) -> BacktestResult:
    """Every policy on the same draws; `progress(n)` is told of each block of replays done."""
    from stagewise.backtest.draw import draw

    if len(table.levels) < 2:
        raise CurvesError(
            f"{table.source}: one budget level ({table.format_budget(table.budgets[0])}); "
            "a back-test needs at least 2"
        )
    if not policies:
        raise CurvesError("--policies: no policy to run")
    model = resolve_cost_model(table, cost_model)
    per_unit = hours_per_unit(table, seconds_per_unit)
    draws = draws or draw(table, replays, cells, seed=seed)
    true_means = table.true_means()
    truth = table.truth()
    final_only_cost = len(table.conditions) * draws.cells[-1] * table.budgets[-1]
    scored: dict[int, list[Scored]] = {i: [] for i in range(len(policies))}
    for chunk, start in enumerate(range(0, draws.replays, CHUNK)):
        stop = min(draws.replays, start + CHUNK)
        ctx = ReplayContext(slice_draws(draws, start, stop), seed, study, chunk)
        for i, policy in enumerate(policies):
            runs, starts = policy.run_with_starts(ctx)
            scored[i].append(score(ctx, runs, true_means, truth, starts=starts, cost_model=model))
            if progress is not None:
                progress(stop - start)
    results = tuple(
        summarise(
            p,
            scored[i],
            final_only_cost,
            table.conditions,
            distinct=draws.distinct,
            hours_per_unit=per_unit,
        )
        for i, p in enumerate(policies)
    )
    warnings = []
    if enumerated(draws.distinct, draws.replays):
        warnings.append(
            f"the table allows only {draws.distinct} distinct draws of cells, and the "
            f"{draws.replays} replays went through each about "
            f"{draws.replays // draws.distinct} times: the numbers are exact over those "
            f"{draws.distinct} draws (intervals are points), and say nothing about seeds or "
            "runs the table lacks"
        )
    elif draws.distinct and draws.distinct < draws.replays:
        warnings.append(
            f"only {draws.distinct} distinct draws of cells among {draws.replays} replays "
            f"(the table has few seeds/runs per level): the intervals count {draws.distinct} "
            "independent replays, not more"
        )
    unknown = sum(p.unknown for p in results)
    if unknown:
        warnings.append(
            f"{unknown} replay(s) over all policies needed a value of a censored run (stopped "
            "early by the original sweep): counted as unknown and left out of that policy's "
            "scores (unknown_replays per policy)"
        )
    ev = None
    if evidence:
        from stagewise.backtest.evidence import evidence_tables

        ev = evidence_tables(table, replays=min(draws.replays, 400), seed=seed)
    return BacktestResult(
        truth=Truth(
            table.conditions[truth],
            table.budgets[-1],
            float(true_means[truth]),
            table.unit,
            table.metric,
        ),
        replays=draws.replays,
        seed=seed,
        cells_per_level=draws.cells,
        table=table.describe(),
        final_only_gpu_hours=None if per_unit is None else final_only_cost * per_unit,
        policies=results,
        cost_model=model,
        budget_unit=table.unit,
        metric=table.metric,
        final_only_cost=final_only_cost,
        seconds_per_unit=seconds_per_unit,
        distinct_draws=draws.distinct,
        draws_enumerated=enumerated(draws.distinct, draws.replays),
        warnings=tuple(warnings),
        evidence=ev,
    )


def measured_seconds_per_unit(study_root: Any, unit: str) -> float | None:
    """Seconds per step or token measured by a study's succeeded runs (median), or None.

    Converts a steps or tokens table's cost to GPU-hours with the study's own throughput when
    no `--seconds-per-unit` is given.
    """
    from stagewise.ledger import Ledger

    if unit == "seconds":
        return None
    try:
        ledger = Ledger.open(study_root, create=False)
    except Exception:  # no ledger (a study never run): nothing measured
        return None
    with ledger:
        rates = []
        for rec in ledger.runs():
            if rec.status != "succeeded" or not rec.training_seconds:
                continue
            amount = rec.num_steps if unit == "steps" else (rec.total_tokens_M or 0) * 1e6
            if amount:
                rates.append(float(rec.training_seconds) / float(amount))
    return float(np.median(rates)) if rates else None


__all__ = [
    "COST_MODELS",
    "BacktestResult",
    "Interval",
    "PolicyResult",
    "Truth",
    "backtest",
    "default_starts",
    "enumerated",
    "hours_per_unit",
    "mean_interval",
    "measured_seconds_per_unit",
    "resolve_cost_model",
    "run_costs",
    "score",
    "wilson",
]
