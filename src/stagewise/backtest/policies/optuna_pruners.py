"""Optuna's own pruners through ask/tell: `optuna-sh`, `optuna-hyperband`, `optuna-wilcoxon`.

Per replay, one in-memory Optuna study; the conditions arrive as trials in an order drawn at
random per replay (a pruner's decisions depend on what finished before). A trial reports its
condition's mean over the replay's cells at each level in ascending order (step = level number,
1-based) and asks `should_prune()` after every level but the last; each reported level is a run
that was paid for. Trials that report the final level are the ones retained. Needs the extra
`stagewise[optuna]`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from stagewise.backtest.policies.base import EtaPolicy, IntArray, Policy, ReplayContext, register
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
    vectorised = False
    needs_optuna = True

    def pruner(self, optuna: Any, n_levels: int) -> Any:
        raise NotImplementedError

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        optuna = _optuna()
        runs = ctx.zeros()
        n_levels = ctx.n_levels
        means = np.stack([lv.means for lv in ctx.draws.levels], axis=0)  # [level, r, c]
        order = np.argsort(ctx.rng(self.label).random((ctx.replays, ctx.n_conditions)), axis=1)
        pruned_state = optuna.trial.TrialState.PRUNED
        with warnings.catch_warnings():
            # WilcoxonPruner (and some pruner arguments) are marked experimental.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            for r in range(ctx.replays):
                study = optuna.create_study(
                    direction="minimize",
                    pruner=self.pruner(optuna, n_levels),
                    sampler=optuna.samplers.RandomSampler(seed=int(ctx.seed)),
                    study_name=f"replay{r}",
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


@register
class OptunaHyperband(EtaPolicy, _OptunaPolicy):
    """optuna.pruners.HyperbandPruner(min_resource=1, max_resource=levels, reduction_factor=eta)."""

    name = "optuna-hyperband"

    def pruner(self, optuna: Any, n_levels: int) -> Any:
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=n_levels, reduction_factor=int(self.params["eta"])
        )


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


__all__ = ["INSTALL", "OptunaHyperband", "OptunaSH", "OptunaWilcoxon", "optuna_available"]
