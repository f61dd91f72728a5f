"""`top_k` (k): all at the first level, the best k by mean straight to the final level."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from stagewise.backtest.policies.base import IntArray, Policy, ReplayContext, keep_best, register
from stagewise.backtest.table import CurvesError


@register
class TopK(Policy):
    name = "top_k"
    defaults: ClassVar[Mapping[str, float | int]] = {"k": 1}

    def check(self) -> None:
        if self.params["k"] < 1:
            raise CurvesError(f"--policies: top_k:k must be >= 1, but got k={self.params['k']}")

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        runs = ctx.zeros()
        alive = np.ones((ctx.replays, ctx.n_conditions), dtype=bool)
        runs[0][:] = 1
        k = min(int(self.params["k"]), ctx.n_conditions)
        kept = keep_best(ctx.draws.levels[0], alive, k, ctx.cid_order)
        runs[-1] += kept
        return runs
