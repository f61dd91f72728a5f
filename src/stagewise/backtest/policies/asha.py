"""`asha` (eta): asynchronous successive halving, one worker, arrival order random per replay.

Whenever the worker is free it promotes, from the highest rung that allows it, the best
condition that is in the top floor(n / eta) of the n finished at that rung and was not promoted
yet; otherwise it starts the next arriving condition at the first level. It stops when every
condition has arrived and nothing can be promoted. Simulated for all replays in lock-step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from stagewise.backtest.policies.base import (
    IntArray,
    Policy,
    ReplayContext,
    best_first,
    check_eta,
    keep_best,
    register,
)


@register
class Asha(Policy):
    name = "asha"
    defaults: ClassVar[Mapping[str, float | int]] = {"eta": 3}

    def check(self) -> None:
        check_eta(self)

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        runs = ctx.zeros()
        r_n, c_n, l_n = ctx.replays, ctx.n_conditions, ctx.n_levels
        eta = float(self.params["eta"])
        arrivals = np.argsort(ctx.rng(self.label).random((r_n, c_n)), axis=1)
        done = [np.zeros((r_n, c_n), dtype=bool) for _ in range(l_n)]
        promoted = [np.zeros((r_n, c_n), dtype=bool) for _ in range(l_n)]
        arrived = np.zeros(r_n, dtype=np.int64)
        rows = np.arange(r_n)
        for _ in range(c_n * l_n):
            pick_c = np.full(r_n, -1, dtype=np.int64)
            pick_l = np.full(r_n, -1, dtype=np.int64)
            for li in range(l_n - 2, -1, -1):
                free = pick_c < 0
                if not free.any():
                    break
                finished = done[li].sum(axis=1)
                top = keep_best(ctx.draws.levels[li], done[li], finished // eta, ctx.cid_order)
                eligible = top & ~promoted[li] & free[:, None]
                has = eligible.any(axis=1)
                if not has.any():
                    continue
                best = best_first(ctx.draws.levels[li], eligible, ctx.cid_order)[:, 0]
                pick_c = np.where(has, best, pick_c)
                pick_l = np.where(has, li + 1, pick_l)
                promoted[li][rows[has], best[has]] = True
            start = (pick_c < 0) & (arrived < c_n)
            pick_c = np.where(start, arrivals[rows, np.minimum(arrived, c_n - 1)], pick_c)
            pick_l = np.where(start, 0, pick_l)
            arrived += start
            act = pick_c >= 0
            if not act.any():
                break
            for li in range(l_n):
                at = act & (pick_l == li)
                done[li][rows[at], pick_c[at]] = True
                runs[li][rows[at], pick_c[at]] += 1
        return runs
