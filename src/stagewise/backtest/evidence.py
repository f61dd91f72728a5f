"""What the table says beyond the policies: how well each budget level predicts the final one.

Per budget level: the rank correlation (Spearman and Kendall) of the conditions' means with
their means at the final level, and **decision accuracy** as DataDecide (Allen AI, 2025) defines
it: over all pairs of conditions whose final means differ, the share whose order at that level
matches the order at the final level (a tie at the level counts half). Each comes with its
compute as a fraction of running every condition at the final level on every cell
(final-only). `by_cells` repeats decision accuracy for 1, 2, ... cells (seeds or runs) per
condition, averaged over random draws of those cells: the points of the decision-accuracy figure,
one line per level.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from stagewise.backtest.table import CurvesTable, Level

FloatArray = npt.NDArray[np.float64]


def pair_agreement(means: FloatArray, final: FloatArray) -> FloatArray:
    """Decision accuracy of means[..., c] against final[c] (over the last axis)."""
    i, j = np.triu_indices(len(final), k=1)
    truth = np.sign(final[i] - final[j])
    keep = truth != 0
    if not keep.any():
        return np.full(means.shape[:-1], math.nan)
    i, j, truth = i[keep], j[keep], truth[keep]
    seen = np.sign(means[..., i] - means[..., j])
    score = np.where(seen == truth, 1.0, np.where(seen == 0, 0.5, 0.0))
    return np.asarray(score.mean(axis=-1), dtype=np.float64)


def level_means(table: CurvesTable, level: Level) -> FloatArray:
    """Each condition's mean over every usable cell (paired) or every run (unpaired)."""
    if table.paired:
        mask = level.complete
        return np.asarray(level.values[:, mask].mean(axis=1), dtype=np.float64)
    flat = level.values.reshape(len(table.conditions), -1)
    return np.asarray(np.nanmean(flat, axis=1), dtype=np.float64)


def _subset_means(level: Level, k: int, draws: int, rng: np.random.Generator) -> FloatArray:
    """means[d, c] over k random usable cells per draw (unpaired: k runs per condition)."""
    avail = level.available  # [c', h, m]
    groups = avail.shape[0]
    flat_avail = avail.reshape(groups, -1)
    keys = np.where(flat_avail[None], rng.random((draws, *flat_avail.shape)), np.inf)
    chosen = np.argsort(keys, axis=2)[:, :, :k]  # [d, c', k]
    n_c = level.values.shape[0]
    grid = level.values.reshape(n_c, -1)
    if groups == 1:
        vals = grid[:, chosen[:, 0, :]]  # [c, d, k]
        return np.asarray(vals.mean(axis=2).T, dtype=np.float64)
    vals = np.take_along_axis(np.broadcast_to(grid, (draws, *grid.shape)), chosen, axis=2)
    return np.asarray(vals.mean(axis=2), dtype=np.float64)


def evidence_tables(table: CurvesTable, *, replays: int = 400, seed: int = 0) -> dict[str, Any]:
    from scipy import stats

    final = level_means(table, table.final)
    full_cost = table.final.n_cells * table.budgets[-1]
    rng = np.random.default_rng([seed, 0x5EED])
    rows = []
    for level in table.levels:
        means = level_means(table, level)
        if np.ptp(means) == 0 or np.ptp(final) == 0:
            rho = tau = math.nan
        else:
            rho = float(stats.spearmanr(means, final).statistic)
            tau = float(stats.kendalltau(means, final).statistic)
        by_cells = []
        for k in range(1, level.n_cells + 1):
            acc = pair_agreement(_subset_means(level, k, replays, rng), final)
            by_cells.append(
                {
                    "cells": k,
                    "decision_accuracy": float(acc.mean()) if np.isfinite(acc).all() else math.nan,
                    "compute_fraction": k * level.budget / full_cost,
                }
            )
        rows.append(
            {
                "budget": level.budget,
                "spearman": rho,
                "kendall": tau,
                "decision_accuracy": float(pair_agreement(means, final)),
                "cells": level.n_cells,
                "compute_fraction": level.n_cells * level.budget / full_cost,
                "by_cells": by_cells,
            }
        )
    return {"budget_unit": table.unit, "metric": table.metric, "levels": rows}


__all__ = ["evidence_tables", "level_means", "pair_agreement"]
