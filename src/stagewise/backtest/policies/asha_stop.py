"""`asha-stop` (eta): ASHA as Ray Tune's `ASHAScheduler` runs it, deciding by stopping.

`asha` promotes from a rung only once eta times as many conditions finished there, so on one
worker with few conditions it can stall below the final level. Ray Tune's scheduler instead
lets every trial run on and stops it at a rung milestone when its result is worse than the
(1 - 1/eta) quantile of the results recorded at that rung before it (numpy's linear
percentile, as Ray computes it); the first trial at a rung always continues. Here one worker
takes the conditions in a random arrival order per replay, each from the first level up until
it is stopped or reaches the final level. Lower val_bpb is better (Ray's `mode="min"`).
"""

from __future__ import annotations

import numpy as np

from stagewise.backtest.policies.base import (
    EtaPolicy,
    FloatArray,
    IntArray,
    ReplayContext,
    register,
)


def nan_percentile(values: FloatArray, q: float) -> FloatArray:
    """np.nanpercentile(values, q, axis=1) (linear method, numpy's own interpolation formula),
    one sort for all rows; a row of NaN only gives -inf."""
    srt = np.sort(values, axis=1)  # NaN sort last
    n = (~np.isnan(values)).sum(axis=1)
    pos = q / 100.0 * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    rows = np.arange(len(values))
    a = srt[rows, np.minimum(lo, srt.shape[1] - 1)] if srt.shape[1] else np.zeros(len(values))
    b = srt[rows, hi] if srt.shape[1] else np.zeros(len(values))
    t = pos - lo
    diff = b - a
    out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return np.asarray(np.where(n > 0, out, -np.inf), dtype=np.float64)


@register
class AshaStop(EtaPolicy):
    name = "asha-stop"

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        runs = ctx.zeros()
        r_n, c_n, l_n = ctx.replays, ctx.n_conditions, ctx.n_levels
        quantile = (1 - 1 / float(self.params["eta"])) * 100
        arrivals = np.argsort(ctx.rng(self.label).random((r_n, c_n)), axis=1)
        rows = np.arange(r_n)
        # recorded[l][r, k]: the loss the k-th arrival recorded at rung l (NaN: never got there).
        recorded = [np.full((r_n, c_n), np.nan) for _ in range(l_n - 1)]
        for k in range(c_n):
            cid = arrivals[:, k]
            going = np.ones(r_n, dtype=bool)
            for li in range(l_n):
                runs[li][rows[going], cid[going]] += 1
                if li == l_n - 1:
                    break
                loss = ctx.draws.levels[li].means[rows, cid]
                stop = np.zeros(r_n, dtype=bool)
                if k > 0:
                    reward = -recorded[li][going, :k]  # Ray's max form of mode="min"
                    cutoff = nan_percentile(reward, quantile)  # -inf: nothing recorded yet
                    stop[going] = -loss[going] < cutoff
                recorded[li][going, k] = loss[going]
                going &= ~stop
                if not going.any():
                    break
        return runs
