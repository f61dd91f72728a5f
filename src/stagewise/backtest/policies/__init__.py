"""Promotion policies: one module each, registered by name in `base.REGISTRY`.

`parse_policies("final_only,sh:eta=3,top_k:k=2")` builds them from the command line; a
parameter without a policy name belongs to the policy before it (`hyperband:eta=3,asha:eta=2`).
"""

from __future__ import annotations

from stagewise.backtest.policies import (  # noqa: F401  (each module registers its policy)
    asha,
    asha_stop,
    extrapolate,
    final_only,
    hyperband,
    optuna_pruners,
    sh,
    study,
    top_k,
)
from stagewise.backtest.policies.base import REGISTRY, Policy, ReplayContext
from stagewise.backtest.policies.optuna_pruners import INSTALL, optuna_available
from stagewise.backtest.table import CurvesError

OPTUNA_POLICIES = ("optuna-sh", "optuna-hyperband", "optuna-wilcoxon")
DEFAULT_POLICIES = ",".join(
    (
        "final_only",
        "top_k:k=1",
        "top_k:k=2",
        "top_k:k=3",
        "sh:eta=2",
        "sh:eta=3",
        "hyperband:eta=3",
        "asha:eta=2",
        "asha:eta=3",
        "asha-stop:eta=2",
        "asha-stop:eta=3",
        "extrapolate:k=3",
    )
)


def parse_policies(text: str) -> list[Policy]:
    """`name[:key=value[;key=value]]`, comma separated, into validated policies."""
    items: list[tuple[str, dict[str, str]]] = []
    for raw in (p.strip() for p in text.split(",")):
        if not raw:
            continue
        name, _, rest = raw.partition(":")
        if "=" in name and not rest:
            if not items:
                raise CurvesError(f"--policies: parameter {raw!r} before any policy name")
            key, _, value = name.partition("=")
            items[-1][1][key.strip()] = value.strip()
            continue
        params: dict[str, str] = {}
        for part in (p for p in rest.split(";") if p.strip()):
            key, eq, value = part.partition("=")
            if not eq:
                raise CurvesError(f"--policies: expected key=value in {raw!r}, but got {part!r}")
            params[key.strip()] = value.strip()
        name = name.strip()
        if name not in REGISTRY:
            raise CurvesError(
                f"--policies: unknown policy {name!r}; policies: {', '.join(sorted(REGISTRY))}"
            )
        items.append((name, params))
    if not items:
        raise CurvesError(f"--policies: no policy in {text!r}")
    return [REGISTRY[name](params) for name, params in items]


def default_policies(*, with_study: bool, with_optuna: bool) -> str:
    text = DEFAULT_POLICIES
    if with_study:
        text += ",study"
    if with_optuna:
        text += ",optuna-sh:eta=3,optuna-hyperband:eta=3,optuna-wilcoxon"
    return text


__all__ = [
    "DEFAULT_POLICIES",
    "INSTALL",
    "OPTUNA_POLICIES",
    "REGISTRY",
    "Policy",
    "ReplayContext",
    "default_policies",
    "optuna_available",
    "parse_policies",
]
