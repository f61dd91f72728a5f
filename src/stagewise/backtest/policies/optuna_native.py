"""Optuna's pruners decided natively, vectorised over replays (no Optuna needed to run them).

Driving a real Optuna study per replay costs about 66 ms a replay (`optuna-wilcoxon`), which
made the default policy set take half an hour at 10,000 replays. These functions reproduce the
verdicts of Optuna's own pruners step by step, as `optuna_pruners.reference_runs` observes them
through ask/tell, with NumPy over all replays at once; a test checks on sampled replays that
both agree exactly (Optuna stays the reference, in the test extra).

- `SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta, min_early_stopping_rate=r)`:
  at step s a trial in rung k is checked once s >= eta ** (r + k); its value is recorded at that
  rung, and it is promotable when at most max(n // eta - 1, 0) of the n competing values (the
  earlier trials' values recorded at that rung, and its own) are lower; otherwise pruned.
  A promoted trial checks the next rung at once (the same step).
- `HyperbandPruner(min_resource=1, max_resource=L, reduction_factor=eta)`: floor(log_eta(L)) + 1
  brackets; a trial's bracket is crc32(f"{study_name}_{trial.number}") modulo the brackets'
  total allocation, walked in order; each bracket is the halving pruner above with
  min_early_stopping_rate = bracket id, competing only within its bracket.
- `WilcoxonPruner(p_threshold=p)` (n_startup_steps=2): once a trial completed, a trial with at
  least two reported steps is pruned when the one-sided Wilcoxon signed-rank test
  (zero_method="zsplit") of its values minus the best complete trial's at the same steps gives
  p < threshold, unless its mean so far is no worse than the best trial's mean over all its
  steps. p-values come from SciPy: a table per number of steps for rows without zeros or ties
  (the exact test depends on the rank sum alone), SciPy per row otherwise.
"""

from __future__ import annotations

import math
import zlib
from functools import lru_cache

import numpy as np

from stagewise.backtest.policies.base import FloatArray, IntArray, ReplayContext


def study_name(r: int) -> str:
    """The name of replay r's study (Hyperband hashes it into each trial's bracket)."""
    return f"replay{r}"


def _level_means(ctx: ReplayContext) -> FloatArray:
    return np.stack([lv.means for lv in ctx.draws.levels], axis=0)  # [level, r, c]


def halving_runs(
    ctx: ReplayContext,
    order: IntArray,
    eta: int,
    brackets: IntArray | None = None,
) -> list[IntArray]:
    """Optuna's successive halving (per-trial bracket = its min_early_stopping_rate)."""
    runs = ctx.zeros()
    means = _level_means(ctx)
    r_n, c_n, l_n = ctx.replays, ctx.n_conditions, ctx.n_levels
    rows = np.arange(r_n)
    bracket = np.zeros((r_n, c_n), dtype=np.int64) if brackets is None else brackets
    n_rungs = int(math.log(max(l_n, 2), eta)) + 2
    recorded = np.full((n_rungs, r_n, c_n), np.nan)  # [rung, replay, trial number]
    for k in range(c_n):
        cid = order[:, k]
        rate = bracket[:, k]
        same = bracket[:, :k] == rate[:, None]  # earlier trials of this trial's bracket
        alive = np.ones(r_n, dtype=bool)
        rung = np.zeros(r_n, dtype=np.int64)
        for li in range(l_n):
            runs[li][rows[alive], cid[alive]] += 1
            if li == l_n - 1:
                break
            step = li + 1
            value = means[li, rows, cid]
            pruned = np.zeros(r_n, dtype=bool)
            active = alive.copy()
            while active.any():
                due = active & (step >= np.power(eta, rate + rung).astype(np.float64))
                if not due.any():
                    break
                r_idx = rows[due]
                ru = np.minimum(rung[due], n_rungs - 1)
                others = recorded[ru, r_idx, :k]  # [due, k]
                mask = np.isfinite(others) & same[due]
                n_comp = mask.sum(axis=1) + 1
                idx = np.maximum(n_comp // eta - 1, 0)
                lower = (mask & (others < value[due, None])).sum(axis=1)
                recorded[ru, r_idx, k] = value[due]
                ok = lower <= idx
                promoted = np.zeros(r_n, dtype=bool)
                promoted[r_idx[ok]] = True
                pruned[r_idx[~ok]] = True
                rung[promoted] += 1
                active = promoted
            alive &= ~pruned
            if not alive.any():
                break
    return runs


def hyperband_brackets(replays: int, n_trials: int, n_levels: int, eta: int) -> IntArray:
    """bracket[r, k] of trial k in replay r, as Optuna's HyperbandPruner assigns it."""
    n_brackets = math.floor(math.log(n_levels / 1, eta)) + 1
    budgets = []
    for b in range(n_brackets):
        s = n_brackets - 1 - b
        budgets.append(math.ceil(n_brackets * (eta**s) / (s + 1)))
    total = sum(budgets)
    out = np.zeros((replays, n_trials), dtype=np.int64)
    for r in range(replays):
        name = study_name(r)
        for k in range(n_trials):
            n = zlib.crc32(f"{name}_{k}".encode()) % total
            for b, budget in enumerate(budgets):
                n -= budget
                if n < 0:
                    out[r, k] = b
                    break
    return out


@lru_cache(maxsize=64)
def _exact_table(n: int) -> tuple[float, ...]:
    """p-value of the one-sided ("greater") exact signed-rank test for each rank sum T+."""
    from scipy import stats

    top = n * (n + 1) // 2
    out = []
    for t in range(top + 1):
        signs = -np.ones(n)
        left = t
        for rank in range(n, 0, -1):  # a subset of 1..n summing to t, largest first
            if rank <= left:
                signs[rank - 1] = 1.0
                left -= rank
        vec = signs * np.arange(1, n + 1)
        out.append(float(stats.wilcoxon(vec, alternative="greater", zero_method="zsplit").pvalue))
    return tuple(out)


def wilcoxon_p(diffs: FloatArray) -> FloatArray:
    """p[r] of scipy.stats.wilcoxon(diffs[r], alternative="greater", zero_method="zsplit")."""
    from scipy import stats

    _r_n, n = diffs.shape
    absd = np.abs(diffs)
    srt = np.sort(absd, axis=1)
    messy = (absd == 0).any(axis=1) | (srt[:, 1:] == srt[:, :-1]).any(axis=1)
    ranks = np.argsort(np.argsort(absd, axis=1), axis=1) + 1
    t_plus = np.where(diffs > 0, ranks, 0).sum(axis=1)
    table = np.asarray(_exact_table(n))
    p = table[t_plus]
    for r in np.flatnonzero(messy):
        p[r] = float(stats.wilcoxon(diffs[r], alternative="greater", zero_method="zsplit").pvalue)
    return np.asarray(p, dtype=np.float64)


def wilcoxon_runs(ctx: ReplayContext, order: IntArray, p_threshold: float) -> list[IntArray]:
    runs = ctx.zeros()
    means = _level_means(ctx)
    r_n, c_n, l_n = ctx.replays, ctx.n_conditions, ctx.n_levels
    rows = np.arange(r_n)
    best_value = np.full(r_n, np.inf)
    best_c = np.full(r_n, -1, dtype=np.int64)
    for k in range(c_n):
        cid = order[:, k]
        alive = np.ones(r_n, dtype=bool)
        for li in range(l_n):
            runs[li][rows[alive], cid[alive]] += 1
            if li == l_n - 1:
                final = means[li, rows, cid]
                better = alive & (final < best_value)  # the first of equal values stays best
                best_value = np.where(better, final, best_value)
                best_c = np.where(better, cid, best_c)
                break
            steps = li + 1
            test = alive & (best_c >= 0)
            if steps < 2 or not test.any():
                continue
            t_rows = rows[test]
            mine = means[:steps, t_rows, cid[test]].T  # [t, steps]
            best_all = means[:, t_rows, best_c[test]].T  # [t, levels]
            p = wilcoxon_p(mine - best_all[:, :steps])
            average_is_best = best_all.mean(axis=1) >= mine.mean(axis=1)
            prune = (p < p_threshold) & ~average_is_best
            alive[t_rows[prune]] = False
            if not alive.any():
                break
    return runs


__all__ = ["halving_runs", "hyperband_brackets", "study_name", "wilcoxon_p", "wilcoxon_runs"]
