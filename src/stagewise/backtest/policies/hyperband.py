"""`hyperband` (eta): every bracket of Hyperband over the table's levels, costs summed.

With L levels, bracket s (s = L-1 .. 0 halvings) starts at level L-1-s with
n_s = min(C, ceil(C * L / (s + 1) * eta ** (s - (L - 1)))) conditions, so the most exploratory
bracket takes all C at the first level, as Hyperband's sizing does with C as its largest
bracket. Which conditions a smaller bracket samples is drawn at random per replay (Hyperband
samples configurations); each bracket is successive halving from its first level. A condition
reaching the final level in two brackets ran (and cost) twice; it is retained once.
"""

from __future__ import annotations

import math

import numpy as np

from stagewise.backtest.policies.base import EtaPolicy, IntArray, ReplayContext, register
from stagewise.backtest.policies.sh import halve


def bracket_sizes(n_conditions: int, n_levels: int, eta: float) -> list[tuple[int, int]]:
    """[(first level, conditions)] of every bracket, the most exploratory first."""
    s_max = n_levels - 1
    out = []
    for s in range(s_max, -1, -1):
        n = math.ceil(n_conditions * (s_max + 1) / (s + 1) * eta ** (s - s_max) - 1e-9)
        out.append((s_max - s, max(1, min(n_conditions, n))))
    return out


@register
class Hyperband(EtaPolicy):
    name = "hyperband"

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        return self.run_with_starts(ctx)[0]

    def run_with_starts(self, ctx: ReplayContext) -> tuple[list[IntArray], list[IntArray] | None]:
        runs = ctx.zeros()
        starts = ctx.zeros()
        rng = ctx.rng(self.label)
        eta = float(self.params["eta"])
        for first, n in bracket_sizes(ctx.n_conditions, ctx.n_levels, eta):
            pick = np.argsort(rng.random((ctx.replays, ctx.n_conditions)), axis=1)[:, :n]
            alive = np.zeros((ctx.replays, ctx.n_conditions), dtype=bool)
            np.put_along_axis(alive, pick, True, axis=1)
            starts[first] += alive  # each bracket's trials start fresh at its first level
            halve(ctx, alive, eta, first, runs)
        return runs, starts
