"""Design a protocol from the evidence: `stagewise backtest CURVES --recommend`.

The protocol space: which of the table's levels to screen at (up to `max_screens` levels
before the final one), how many cells (seeds or runs) each stage uses, and how many conditions
each gate keeps (best k; k from 1..4 and the eta = 2, 3, 4 halving sizes), every protocol ending
with all survivors at the final level. Each protocol is replayed on the same draws as the
policies (nested cells: a stage with k cells uses the first k of the replay's draw), under the
same cost model, and the recommendation is the cheapest whose lower 95% bound of p_retain is
at least the target (and whose cost ratio is at most `max_cost_ratio`). Its final gate is a
confirm gate whose threshold (`within_gap_of_best`) is the gap to the best at the final stage
within which the truth fell in `target` of the replays that retained it.

The search walks the space depth first, so a prefix of stages shared by many protocols is
simulated once; everything is NumPy over the replays.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stagewise.backtest.draw import Draws, draw
from stagewise.backtest.policies.base import BoolArray, FloatArray, IntArray
from stagewise.backtest.replay import enumerated, resolve_cost_model, wilson
from stagewise.backtest.table import CurvesError, CurvesTable
from stagewise.budget_units import format_duration

ETAS = (2, 3, 4)
KEEPS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Protocol:
    levels: tuple[int, ...]  # level indices, ascending; the last is the final level
    cells: tuple[int, ...]  # cells per stage
    keep: tuple[int, ...]  # conditions each gate keeps (one gate per stage but the last)

    def describe(self, table: CurvesTable) -> str:
        parts = []
        for i, (li, k) in enumerate(zip(self.levels, self.cells, strict=True)):
            parts.append(f"{table.format_budget(table.budgets[li])} x{k}")
            if i < len(self.keep):
                parts.append(f"keep {self.keep[i]}")
        return " -> ".join(parts)


@dataclass(frozen=True)
class Evaluated:
    protocol: Protocol
    p_retain: float
    p_retain_low: float
    p_retain_high: float
    p_select: float
    mean_regret: float
    cost: float  # mean per replay, in the table's unit
    cost_ratio: float
    unknown: int
    confirm_threshold: float

    def to_json(self, table: CurvesTable) -> dict[str, Any]:
        return {
            "protocol": self.protocol.describe(table),
            "levels": [table.budgets[li] for li in self.protocol.levels],
            "cells": list(self.protocol.cells),
            "keep": list(self.protocol.keep),
            "p_retain": self.p_retain,
            "p_retain_interval": [self.p_retain_low, self.p_retain_high],
            "p_select": self.p_select,
            "mean_regret": self.mean_regret,
            "cost": self.cost,
            "cost_vs_final_only": self.cost_ratio,
            "unknown_replays": self.unknown,
            "confirm_threshold": self.confirm_threshold,
        }


@dataclass(frozen=True)
class Recommendation:
    target: float
    max_cost_ratio: float | None
    candidates: int
    replays: int
    cost_model: str
    best: Evaluated | None
    runners_up: tuple[Evaluated, ...]
    closest: Evaluated | None  # the highest lower bound, when nothing reaches the target
    distinct_draws: int = 0
    draws_enumerated: bool = False

    def to_json(self, table: CurvesTable) -> dict[str, Any]:
        return {
            "target_retain": self.target,
            "max_cost_ratio": self.max_cost_ratio,
            "candidates": self.candidates,
            "replays": self.replays,
            "cost_model": self.cost_model,
            "found": self.best is not None,
            "recommended": None if self.best is None else self.best.to_json(table),
            "runners_up": [r.to_json(table) for r in self.runners_up],
            "closest": None if self.closest is None else self.closest.to_json(table),
            "distinct_draws": self.distinct_draws,
            "draws_enumerated": self.draws_enumerated,
        }


@dataclass
class _State:
    alive: BoolArray
    cost: FloatArray
    unknown: BoolArray
    level: int
    cells: int
    n_alive: int


class _Space:
    """The replays' precomputed orders, and the stage step the search repeats."""

    def __init__(self, table: CurvesTable, draws: Draws, model: str) -> None:
        self.table = table
        self.draws = draws
        self.model = model
        self.budgets = table.budgets
        self.n_c = len(table.conditions)
        self.rows = np.arange(draws.replays)
        names = table.conditions
        rank = sorted(range(self.n_c), key=lambda i: names[i])
        self.cid_order = np.empty(self.n_c, dtype=np.int64)
        self.cid_order[rank] = np.arange(self.n_c)
        self._orders: dict[tuple[int, int], tuple[FloatArray, IntArray]] = {}

    def means_order(self, li: int, k: int) -> tuple[FloatArray, IntArray]:
        """Means over the first k cells of level li, and each replay's order best first."""
        key = (li, k)
        if key not in self._orders:
            means = self.draws.levels[li].values[:, :, :k].mean(axis=2)
            tie = np.broadcast_to(self.cid_order, means.shape)
            order = np.lexsort((tie, means), axis=1).astype(np.int64)
            self._orders[key] = (np.asarray(means, dtype=np.float64), order)
        return self._orders[key]

    def missing(self, li: int) -> BoolArray | None:
        return self.draws.levels[li].missing

    def run_stage(self, state: _State | None, li: int, k: int) -> _State:
        """Every alive condition runs at level li on k cells: cost and censoring added."""
        if state is None:
            alive = np.ones((self.draws.replays, self.n_c), dtype=bool)
            cost = np.zeros(self.draws.replays)
            unknown = np.zeros(self.draws.replays, dtype=bool)
            n_alive = self.n_c
            add = n_alive * k * self.budgets[li]
        else:
            alive, cost, unknown, n_alive = state.alive, state.cost, state.unknown, state.n_alive
            if self.model == "restart":
                add = n_alive * k * self.budgets[li]
            else:
                step = self.budgets[li] - self.budgets[state.level]
                kept = min(k, state.cells)
                add = n_alive * (kept * step + max(k - state.cells, 0) * self.budgets[li])
        miss = self.missing(li)
        if miss is not None:
            unknown = unknown | (alive & miss).any(axis=1)
        return _State(alive, cost + add, unknown, li, k, n_alive)

    def gate(self, state: _State, keep: int) -> _State:
        """Keep the best `keep` alive conditions by their means at the state's stage."""
        _, order = self.means_order(state.level, state.cells)
        alive_sorted = np.take_along_axis(state.alive, order, axis=1)
        kept_sorted = alive_sorted & (np.cumsum(alive_sorted, axis=1) <= keep)
        alive = np.zeros_like(state.alive)
        np.put_along_axis(alive, order, kept_sorted, axis=1)
        return _State(alive, state.cost, state.unknown, state.level, state.cells, keep)


def keep_options(n_alive: int) -> list[int]:
    out = {k for k in KEEPS if k < n_alive}
    out |= {max(1, n_alive // eta) for eta in ETAS if n_alive // eta < n_alive}
    return sorted(k for k in out if 1 <= k < n_alive)


def recommend(
    table: CurvesTable,
    *,
    target: float = 0.9,
    replays: int = 1000,
    seed: int = 0,
    cost_model: str | None = None,
    max_cost_ratio: float | None = None,
    max_screens: int = 3,
    max_cells: int = 2,
) -> Recommendation:
    if not 0 < target < 1:
        raise CurvesError(f"--target-retain: expected a number in (0, 1), but got {target:g}")
    if max_cost_ratio is not None and not max_cost_ratio > 0:
        raise CurvesError(f"--max-cost-ratio: expected a positive number, but got {max_cost_ratio}")
    if len(table.levels) < 2:
        raise CurvesError(f"{table.source}: one budget level; a protocol needs at least 2")
    model = resolve_cost_model(table, cost_model)
    within = table.curve_kind == "within_run"
    n_levels = len(table.levels)
    final = n_levels - 1
    if within:
        k_max = min(max_cells, min(lv.n_cells for lv in table.levels))
        cells = tuple(k_max for _ in table.levels)
    else:
        cells = tuple(
            table.levels[li].n_cells if li == final else min(max_cells, table.levels[li].n_cells)
            for li in range(n_levels)
        )
    draws = draw(table, replays, cells, seed=seed, within_run=within)
    space = _Space(table, draws, model)
    truth = table.truth()
    true_means = table.true_means()
    final_cells = cells[final]
    final_only_cost = len(table.conditions) * final_cells * table.budgets[final]
    exact = enumerated(draws.distinct, draws.replays)
    results: list[Evaluated] = []

    def finish(state: _State | None, path: Protocol, k_fixed: int | None) -> None:
        k_final = final_cells if k_fixed is None else k_fixed
        end = space.run_stage(state, final, k_final)
        means, order = space.means_order(final, k_final)
        known = ~end.unknown
        n = int(known.sum())
        if n == 0:
            return
        retain = end.alive[:, truth][known]
        alive_sorted = np.take_along_axis(end.alive, order, axis=1)
        first = np.argmax(alive_sorted, axis=1)
        choice = order[space.rows, first][known]
        best_mean = means[space.rows, order[space.rows, first]][known]
        gap = (means[:, truth][known] - best_mean)[retain]
        p = float(retain.mean())
        n_eff = float(min(n, draws.distinct)) if draws.distinct else float(n)
        low, high = (
            (p, p) if exact else (wilson(p * n_eff, n_eff).low, wilson(p * n_eff, n_eff).high)
        )
        threshold = float(np.quantile(gap, target)) if len(gap) else math.nan
        cost = float(end.cost[known].mean())
        protocol = Protocol((*path.levels, final), (*path.cells, k_final), path.keep)
        results.append(
            Evaluated(
                protocol=protocol,
                p_retain=p,
                p_retain_low=low,
                p_retain_high=high,
                p_select=float((choice == truth).mean()),
                mean_regret=float((true_means[choice] - true_means[truth]).mean()),
                cost=cost,
                cost_ratio=cost / final_only_cost,
                unknown=int((~known).sum()),
                confirm_threshold=_round_up(max(0.0, threshold)),
            )
        )

    def expand(state: _State | None, path: Protocol, depth: int, k_fixed: int | None) -> None:
        """Every protocol that starts with `path` (k_fixed: within_run's one cell count)."""
        finish(state, path, k_fixed)
        if depth >= max_screens:
            return
        first_level = 0 if state is None else state.level + 1
        n_alive = len(table.conditions) if state is None else state.n_alive
        if n_alive <= 1:
            return
        k_choices = [k_fixed] if k_fixed is not None else range(1, max(cells[:final]) + 1)
        for li in range(first_level, final):
            for k in k_choices:
                if k > cells[li]:
                    continue
                ran = space.run_stage(state, li, k)
                for keep in keep_options(n_alive):
                    expand(
                        space.gate(ran, keep),
                        Protocol((*path.levels, li), (*path.cells, k), (*path.keep, keep)),
                        depth + 1,
                        k_fixed,
                    )

    # within_run: a protocol follows the same k runs from its first stage to the last.
    for k_fixed in range(1, cells[0] + 1) if within else [None]:
        expand(None, Protocol((), (), ()), 0, k_fixed)
    feasible = [
        r
        for r in results
        if r.p_retain_low >= target and (max_cost_ratio is None or r.cost_ratio <= max_cost_ratio)
    ]
    feasible.sort(key=lambda r: (r.cost, -r.p_retain, len(r.protocol.levels)))
    closest = None
    if not feasible and results:
        closest = max(results, key=lambda r: (r.p_retain_low, -r.cost))
    return Recommendation(
        target=target,
        max_cost_ratio=max_cost_ratio,
        candidates=len(results),
        replays=draws.replays,
        cost_model=model,
        best=feasible[0] if feasible else None,
        runners_up=tuple(feasible[1:3]),
        closest=closest,
        distinct_draws=draws.distinct,
        draws_enumerated=exact,
    )


def _round_up(value: float) -> float:
    """Two significant digits, rounded up (a threshold should not shrink by rounding)."""
    if value <= 0 or not math.isfinite(value):
        return 0.0
    scale = 10 ** (math.floor(math.log10(value)) - 1)
    return float(math.ceil(value / scale - 1e-9) * scale)


def budget_text(table: CurvesTable, budget: float) -> str:
    """A level as a study.toml budget: `2s`, `10m`, `2000steps`, `50000000tok`."""
    if table.unit == "seconds":
        return format_duration(budget)
    amount = round(budget)
    return f"{amount}steps" if table.unit == "steps" else f"{amount}tok"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _line(ev: Evaluated, table: CurvesTable) -> str:
    return (
        f"{ev.protocol.describe(table)}: p_retain {ev.p_retain:.3f} "
        f"[{ev.p_retain_low:.3f}, {ev.p_retain_high:.3f}], p_select {ev.p_select:.3f}, "
        f"mean regret {ev.mean_regret:.4g}, cost {ev.cost_ratio:.3f} x final_only"
    )


def study_fragment(
    rec: Recommendation,
    table: CurvesTable,
    curves_path: Path,
    *,
    seed: int,
) -> str:
    """The recommended protocol as `[stages.*]` and `[gates.*]` tables, with its evidence."""
    if rec.best is None:
        raise CurvesError("no protocol reached the target; nothing to write")
    best = rec.best
    p = best.protocol
    within = table.curve_kind == "within_run"
    hosts = list(table.hosts)
    out = [
        "# Recommended by `stagewise backtest --recommend` from the evidence below. Paste these",
        "# tables into a study.toml that has [study], [runner] and [hosts], then freeze its gates.",
        f"# curves: {curves_path.name}  sha256 {sha256_of(curves_path)}",
        f"# table: {len(table.conditions)} conditions, {table.metric} at "
        f"{', '.join(table.format_budget(b) for b in table.budgets)}; "
        f"{'paired' if table.paired else 'unpaired'}, {table.curve_kind}",
        f"# replays: {rec.replays} (seed {seed}), {rec.distinct_draws} distinct draws"
        + (" (all enumerated: the numbers are exact over them)" if rec.draws_enumerated else "")
        + "; cost model "
        f"{rec.cost_model}; {rec.candidates} candidate protocols; target p_retain >= "
        f"{rec.target:g} (lower 95% bound)"
        + (f", cost <= {rec.max_cost_ratio:g} x final_only" if rec.max_cost_ratio else ""),
        f"# recommended: {_line(best, table)}",
        f"# p_retain {best.p_retain:.4f} [{best.p_retain_low:.4f}, {best.p_retain_high:.4f}]; "
        f"p_select {best.p_select:.4f}; mean regret {best.mean_regret:.6g}; cost ratio "
        f"{best.cost_ratio:.4f}",
    ]
    for i, r in enumerate(rec.runners_up, start=1):
        out.append(f"# runner-up {i}: {_line(r, table)}")
    if not rec.runners_up:
        out.append("# runners-up: none other reached the target")
    out.append("")
    next_seed = 1
    n_stages = len(p.levels)
    for i, (li, k) in enumerate(zip(p.levels, p.cells, strict=True)):
        last = i == n_stages - 1
        sid = "confirm" if last else f"stage{i + 1}"
        per_host = max(1, math.ceil(k / len(hosts)))
        if within:
            seeds = list(range(1, per_host + 1))  # the same runs, continued
        else:
            seeds = list(range(next_seed, next_seed + per_host))
            next_seed += per_host
        candidates = '"all"' if i == 0 else f'{{ gate = "g{i}" }}'
        out += [
            f"[stages.{sid}]",
            f'budget = "{budget_text(table, table.budgets[li])}"',
            f"seeds = [{', '.join(str(s) for s in seeds)}]",
            f"hosts = [{', '.join(f'{chr(34)}{h}{chr(34)}' for h in hosts)}]",
            f"candidates = {candidates}",
            "",
        ]
        if not last:
            out += [
                f"[gates.g{i + 1}]",
                'kind = "promote"',
                f'stages = ["{sid}"]',
                f'rules = [{{ rule = "best_k", k = {p.keep[i]}, reason = "best means at '
                f'{table.format_budget(table.budgets[li])}" }}]',
                "",
            ]
        else:
            out += [
                "[gates.g_confirm]",
                'kind = "confirm"',
                f'stages = ["{sid}"]',
                f'rules = [{{ rule = "within_gap_of_best", threshold = {best.confirm_threshold:.6g}, '
                f'reason = "the truth fell within this gap of the best in {rec.target:g} of '
                'the replays" }]',
                "",
            ]
    return "\n".join(out)


def recommended_point(
    rec: Recommendation, table: CurvesTable, hours_per_unit: float | None
) -> dict[str, Any] | None:
    """The recommended protocol as a Pareto-figure row."""
    if rec.best is None:
        return None
    b = rec.best
    cost = b.cost * hours_per_unit if hours_per_unit is not None else b.cost
    return {
        "label": f"recommended: {b.protocol.describe(table)}",
        "policy": "recommended",
        "gpu_hours": None if hours_per_unit is None else cost,
        "gpu_hours_low": None if hours_per_unit is None else cost,
        "gpu_hours_high": None if hours_per_unit is None else cost,
        "p_retain": b.p_retain,
        "p_retain_low": b.p_retain_low,
        "p_retain_high": b.p_retain_high,
        "cost_vs_final_only": b.cost_ratio,
        "cost": cost,
        "cost_low": cost,
        "cost_high": cost,
        "recommended": True,
    }


__all__ = [
    "Evaluated",
    "Protocol",
    "Recommendation",
    "budget_text",
    "recommend",
    "recommended_point",
    "sha256_of",
    "study_fragment",
]
