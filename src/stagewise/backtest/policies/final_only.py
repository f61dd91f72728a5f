"""`final_only`: every condition at the final level (the brute-force baseline)."""

from __future__ import annotations

from stagewise.backtest.policies.base import IntArray, Policy, ReplayContext, register


@register
class FinalOnly(Policy):
    name = "final_only"

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        runs = ctx.zeros()
        runs[-1][:] = 1
        return runs
