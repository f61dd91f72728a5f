"""`asha` (eta): asynchronous successive halving, one worker, arrival order random per replay.

Whenever the worker is free it promotes, from the highest rung that allows it, the best
condition that is in the top floor(n / eta) of the n finished at that rung and was not promoted
yet; otherwise it starts the next arriving condition at the first level. It stops when every
condition has arrived and nothing can be promoted. Simulated for all replays in lock-step.
"""

from __future__ import annotations

import numpy as np

from stagewise.backtest.policies.base import (
    EtaPolicy,
    IntArray,
    ReplayContext,
    best_first,
    register,
)


@register
class Asha(EtaPolicy):
    name = "asha"

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        runs = ctx.zeros()
        r_n, c_n, l_n = ctx.replays, ctx.n_conditions, ctx.n_levels
        eta = float(self.params["eta"])
        arrivals = np.argsort(ctx.rng(self.label).random((r_n, c_n)), axis=1)
        rows = np.arange(r_n)
        # Each rung's order of all conditions, best first, computed once: "top floor(n / eta)
        # of those finished" is then a prefix count in that order, with no sort per step.
        # (Exact ties on the mean break by mean rank over all conditions, not only the
        # finished ones; with real numbers that never differs.)
        everyone = np.ones((r_n, c_n), dtype=bool)
        order = [best_first(ctx.draws.levels[li], everyone, ctx.cid_order) for li in range(l_n)]
        # done/promoted are kept in each rung's sorted order (column j = j-th best there).
        done = [np.zeros((r_n, c_n), dtype=bool) for _ in range(l_n)]
        promoted = [np.zeros((r_n, c_n), dtype=bool) for _ in range(l_n)]
        position = []
        for li in range(l_n):
            pos = np.empty_like(order[li])
            np.put_along_axis(pos, order[li], np.broadcast_to(np.arange(c_n), (r_n, c_n)), axis=1)
            position.append(pos)
        arrived = np.zeros(r_n, dtype=np.int64)
        for _ in range(c_n * l_n):
            pick_c = np.full(r_n, -1, dtype=np.int64)
            pick_l = np.full(r_n, -1, dtype=np.int64)
            for li in range(l_n - 2, -1, -1):
                free = pick_c < 0
                if not free.any():
                    break
                finished = done[li]
                rank_among = np.cumsum(finished, axis=1) - 1
                top = finished & (rank_among < (finished.sum(axis=1) // eta)[:, None])
                eligible = top & ~promoted[li] & free[:, None]
                has = eligible.any(axis=1)
                if not has.any():
                    continue
                j = np.argmax(eligible, axis=1)
                best = order[li][rows, j]
                pick_c = np.where(has, best, pick_c)
                pick_l = np.where(has, li + 1, pick_l)
                promoted[li][rows[has], j[has]] = True
            start = (pick_c < 0) & (arrived < c_n)
            pick_c = np.where(start, arrivals[rows, np.minimum(arrived, c_n - 1)], pick_c)
            pick_l = np.where(start, 0, pick_l)
            arrived += start
            act = pick_c >= 0
            if not act.any():
                break
            for li in range(l_n):
                at = act & (pick_l == li)
                if at.any():
                    done[li][rows[at], position[li][rows[at], pick_c[at]]] = True
                    runs[li][rows[at], pick_c[at]] += 1
        return runs
