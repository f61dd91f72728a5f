"""What a gate rule returns, and how a built-in rule is declared: the types shared by the rule
registry (`registry.py`, which owns the table) and the built-in rules (`rules.py`).

Kept apart from both so that neither imports the other's module back: the registry imports the
rules' explicit list, the rules import only this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stagewise.analysis.stats import PoolStats
    from stagewise.study.model import Rule

__all__ = ["BuiltinRule", "RuleCheck", "RuleFn"]


@dataclass(frozen=True)
class RuleCheck:
    """The outcome of one rule for one condition."""

    holds: bool
    detail: str
    observed: float | None = None
    threshold: float | None = None


RuleFn = Callable[["Rule", "PoolStats", tuple[str, ...]], dict[str, RuleCheck]]


@dataclass(frozen=True)
class BuiltinRule:
    """A built-in rule as `rules.py` lists it; its parameters are declared in
    `study.rule_params`, and the registry registers it under `name`."""

    name: str
    fn: RuleFn
    summary: str
    statistic: str | None = None  # the ConditionStats field a threshold rule compares
    twin: str | None = None  # the rule judging the diagnostic twin statistic
