"""`sh` (eta): synchronous successive halving over the table's budget levels.

All conditions run at the first level; after each level but the last the best
max(1, floor(n / eta)) by mean over that level's cells survive (ties: lower mean rank over
the cells, then condition_id) and run at the next level.
"""

from __future__ import annotations

import numpy as np

from stagewise.backtest.policies.base import (
    BoolArray,
    EtaPolicy,
    IntArray,
    ReplayContext,
    keep_best,
    register,
)


def halve(
    ctx: ReplayContext, alive: BoolArray, eta: float, first: int, runs: list[IntArray]
) -> None:
    """Successive halving from level `first` with `alive` entering it; adds to `runs`."""
    for li in range(first, ctx.n_levels):
        runs[li] += alive
        if li == ctx.n_levels - 1:
            break
        n = alive.sum(axis=1)
        keep = np.maximum(1, np.floor(n / eta)).astype(np.int64)
        keep = np.where(n > 0, keep, 0)
        alive = keep_best(ctx.draws.levels[li], alive, keep, ctx.cid_order)


@register
class SuccessiveHalving(EtaPolicy):
    name = "sh"

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        runs = ctx.zeros()
        alive = np.ones((ctx.replays, ctx.n_conditions), dtype=bool)
        halve(ctx, alive, float(self.params["eta"]), 0, runs)
        return runs
