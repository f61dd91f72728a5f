"""Optuna's pruners as policies: `optuna-sh`, `optuna-hyperband`, `optuna-wilcoxon`.

Per replay, the conditions arrive as trials in an order drawn at random per replay (a pruner's
decisions depend on what finished before). A trial reports its condition's mean over the
replay's cells at each level in ascending order (step = level number, 1-based) and asks
`should_prune()` after every level but the last; each reported level is a run that was paid
for. Trials that report the final level are the ones retained.

The verdicts are decided natively and vectorised (`optuna_native`), so the policies run
without Optuna and in a fraction of the time; `reference_runs` drives Optuna's own pruners
through ask/tell, one in-memory study per replay, and a test checks that both agree exactly.
The reference needs the extra `stagewise[optuna]`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from stagewise.backtest.policies.base import EtaPolicy, IntArray, Policy, ReplayContext, register
from stagewise.backtest.policies.optuna_native import (
    halving_runs,
    hyperband_brackets,
    study_name,
    wilcoxon_runs,
)
from stagewise.backtest.table import CurvesError

INSTALL = "pip install 'stagewise[optuna]'"


def optuna_available() -> bool:
    try:
        import optuna  # noqa: F401
    except ImportError:
        return False
    return True


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise CurvesError(f"--policies: Optuna's pruners need Optuna ({INSTALL})") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class _OptunaPolicy(Policy):
    def pruner(self, optuna: Any, n_levels: int) -> Any:
        raise NotImplementedError

    def native(self, ctx: ReplayContext, order: IntArray) -> list[IntArray]:
        raise NotImplementedError

    def arrivals(self, ctx: ReplayContext) -> IntArray:
        """The trials' arrival order per replay (the same for the native and reference runs)."""
        rng = ctx.rng(self.label)
        order: IntArray = np.argsort(rng.random((ctx.replays, ctx.n_conditions)), axis=1)
        return order

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        return self.native(ctx, self.arrivals(ctx))

    def reference_runs(
        self, ctx: ReplayContext, replays: list[int] | None = None
    ) -> list[IntArray]:
        """The same replays through Optuna's own pruners (ask/tell); `replays`: a sample."""
        optuna = _optuna()
        runs = ctx.zeros()
        n_levels = ctx.n_levels
        means = np.stack([lv.means for lv in ctx.draws.levels], axis=0)  # [level, r, c]
        order = self.arrivals(ctx)
        pruned_state = optuna.trial.TrialState.PRUNED
        with warnings.catch_warnings():
            # WilcoxonPruner (and some pruner arguments) are marked experimental.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for r in range(ctx.replays) if replays is None else replays:
                study = optuna.create_study(
                    direction="minimize",
                    pruner=self.pruner(optuna, n_levels),
                    sampler=optuna.samplers.RandomSampler(seed=int(ctx.seed)),
                    study_name=study_name(r),
                )
                for c in order[r]:
                    trial = study.ask()
                    for li in range(n_levels):
                        value = float(means[li, r, c])
                        runs[li][r, c] += 1
                        trial.report(value, step=li + 1)
                        if li < n_levels - 1 and trial.should_prune():
                            study.tell(trial, state=pruned_state)
                            break
                    else:
                        study.tell(trial, value)
        return runs


@register
class OptunaSH(EtaPolicy, _OptunaPolicy):
    """optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)."""

    name = "optuna-sh"

    def pruner(self, optuna: Any, n_levels: int) -> Any:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=int(self.params["eta"]), min_early_stopping_rate=0
        )

    def native(self, ctx: ReplayContext, order: IntArray) -> list[IntArray]:
        return halving_runs(ctx, order, int(self.params["eta"]))


@register
class OptunaHyperband(EtaPolicy, _OptunaPolicy):
    """optuna.pruners.HyperbandPruner(min_resource=1, max_resource=levels, reduction_factor=eta)."""

    name = "optuna-hyperband"

    def pruner(self, optuna: Any, n_levels: int) -> Any:
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=n_levels, reduction_factor=int(self.params["eta"])
        )

    def native(self, ctx: ReplayContext, order: IntArray) -> list[IntArray]:
        eta = int(self.params["eta"])
        brackets = hyperband_brackets(ctx.replays, ctx.n_conditions, ctx.n_levels, eta)
        return halving_runs(ctx, order, eta, brackets)


@register
class OptunaWilcoxon(_OptunaPolicy):
    """optuna.pruners.WilcoxonPruner(p_threshold=p): levels play the role of instances."""

    name = "optuna-wilcoxon"
    defaults: ClassVar[Mapping[str, float | int]] = {"p": 0.1}

    def check(self) -> None:
        if not 0 < self.params["p"] < 1:
            raise CurvesError(
                f"--policies: optuna-wilcoxon:p must be in (0, 1), but got p={self.params['p']:g}"
            )

    def pruner(self, optuna: Any, n_levels: int) -> Any:
        return optuna.pruners.WilcoxonPruner(p_threshold=float(self.params["p"]))

    def native(self, ctx: ReplayContext, order: IntArray) -> list[IntArray]:
        return wilcoxon_runs(ctx, order, float(self.params["p"]))


__all__ = ["INSTALL", "OptunaHyperband", "OptunaSH", "OptunaWilcoxon", "optuna_available"]
