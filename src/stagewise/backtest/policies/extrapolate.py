"""`extrapolate` (k, levels): a learning-curve baseline that promotes by a predicted final value.

Every condition runs the first `levels` levels; each condition's means there are fitted with a
saturating power law, val(B) = a + b * (B / B_1) ** -c, and the best k by the value predicted at
the final budget run at the final level. This is the family of LC-PFN and loss-curve-collapse
predictors; LC-PFN and ifBO download their weights at first use, so they are not for an offline
tool, and this closed-form fit stands in for them.

The fit is vectorised over all replays and conditions: for each exponent c on a grid (0.02..3)
the model is linear in (a, b), solved by least squares in closed form, and the c with the
smallest squared error wins (tests check it against `scipy.optimize.curve_fit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from stagewise.backtest.policies.base import (
    FloatArray,
    IntArray,
    Policy,
    ReplayContext,
    register,
)
from stagewise.backtest.table import CurvesError

EXPONENTS = np.geomspace(0.02, 3.0, 240)


def predict_final(budgets: FloatArray, values: FloatArray, final_budget: float) -> FloatArray:
    """values[..., m] at budgets[m] -> the power law's value at `final_budget` ([...]).

    For each exponent the least-squares (a, b) and its squared error come from sums alone
    (sse = Syy - Szy^2 / Szz), one matrix product over every curve at once.
    """
    x = budgets / budgets[0]
    z = x[None, :] ** -EXPONENTS[:, None]  # [g, m]
    zmean = z.mean(axis=1)  # [g]
    zc = z - zmean[:, None]
    szz = (zc**2).sum(axis=1)  # [g]
    flat = values.reshape(-1, len(x))  # [n, m]
    ym = flat.mean(axis=1, keepdims=True)
    yc = flat - ym
    szy = yc @ zc.T  # [n, g]
    sse = (yc**2).sum(axis=1, keepdims=True) - szy**2 / szz[None, :]
    best = np.argmin(sse, axis=1)
    rows = np.arange(len(flat))
    slope = szy[rows, best] / szz[best]
    intercept = ym[:, 0] - slope * zmean[best]
    xf = final_budget / budgets[0]
    pred = intercept + slope * xf ** -EXPONENTS[best]
    return np.asarray(pred.reshape(values.shape[:-1]), dtype=np.float64)


@register
class Extrapolate(Policy):
    name = "extrapolate"
    defaults: ClassVar[Mapping[str, float | int]] = {"k": 3, "levels": 3}

    def check(self) -> None:
        if self.params["k"] < 1:
            raise CurvesError(f"--policies: extrapolate:k must be >= 1, but got {self.params['k']}")
        if self.params["levels"] < 3:
            raise CurvesError(
                "--policies: extrapolate:levels must be >= 3 (a, b and c need three points), "
                f"but got {self.params['levels']}"
            )

    def unusable(self, n_levels: int) -> str | None:
        m = int(self.params["levels"])
        if m < n_levels:
            return None
        return (
            f"extrapolate:levels={m} needs at least {m + 1} budget levels; the table has {n_levels}"
        )

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        m = int(self.params["levels"])
        reason = self.unusable(ctx.n_levels)
        if reason is not None:
            raise CurvesError(f"--policies: {reason}")
        runs = ctx.zeros()
        for li in range(m):
            runs[li][:] = 1
        budgets = np.asarray(ctx.draws.budgets, dtype=np.float64)
        values = np.stack([ctx.draws.levels[li].means for li in range(m)], axis=-1)  # [r, c, m]
        pred = predict_final(budgets[:m], values, float(budgets[-1]))
        k = min(int(self.params["k"]), ctx.n_conditions)
        tie = np.broadcast_to(ctx.cid_order, pred.shape)
        order = np.lexsort((tie, pred), axis=1)
        kept = np.zeros_like(runs[-1])
        np.put_along_axis(kept, order[:, :k], 1, axis=1)
        runs[-1] += kept
        return runs
