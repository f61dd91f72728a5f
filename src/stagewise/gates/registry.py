"""The rule registry: each gate rule is one small function registered under its study-file name.

A rule receives the rule as written, the pooled statistics of its gate
(`stagewise.analysis.stats.PoolStats`) and the complete conditions it targets, and returns for
each of them a `RuleCheck`: whether it holds and the numbers behind that. The study loader uses
the declared parameter names to validate `rules = [...]` before anything runs; `statistic` and
`twin` tell the sensitivity analysis what a threshold rule compares and its diagnostic twin.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stagewise.analysis.thresholds import TOLERANCE, within
from stagewise.gates.rule_check import RuleCheck, RuleFn
from stagewise.gates.rules import BUILTIN_RULES
from stagewise.study.rule_params import RuleParams, declare_rule_params, declared

__all__ = ["TOLERANCE", "RuleCheck", "RuleFn", "RuleSpec", "get_rule", "register_rule", "within"]


@dataclass(frozen=True)
class RuleSpec:
    name: str
    fn: RuleFn
    required: dict[str, type]
    optional: dict[str, type]
    threshold_param: str | None
    summary: str
    statistic: str | None = None  # the ConditionStats field a threshold rule compares
    twin: str | None = None  # the rule judging the diagnostic twin statistic


_RULES: dict[str, RuleSpec] = {}


def register_rule(
    name: str,
    *,
    required: dict[str, type] | None = None,
    optional: dict[str, type] | None = None,
    threshold_param: str | None = None,
    summary: str = "",
    statistic: str | None = None,
    twin: str | None = None,
) -> Callable[[RuleFn], RuleFn]:
    """Decorator: make `fn` available to study files as `{ rule = "<name>", ... }`.

    A built-in rule's parameters are declared once, in `study.rule_params` (the loader reads them
    there); a plug-in rule passes them here and they are declared for it.
    """
    if required is not None or optional is not None or threshold_param is not None:
        declare_rule_params(
            RuleParams(name, dict(required or {}), dict(optional or {}), threshold_param)
        )
    params = declared(name)
    if params is None:
        raise ValueError(f"rule {name!r}: declare its parameters (required=..., optional=...)")

    def wrap(fn: RuleFn) -> RuleFn:
        doc = (fn.__doc__ or "").strip().splitlines()
        _RULES[name] = RuleSpec(
            name=name,
            fn=fn,
            required=dict(params.required),
            optional=dict(params.optional),
            threshold_param=params.threshold_param,
            summary=summary or (doc[0] if doc else ""),
            statistic=statistic,
            twin=twin,
        )
        return fn

    return wrap


# The built-in rules, registered here by the module that owns the table (their parameters are
# declared in study.rule_params); a plug-in registers itself with the decorator.
for _rule in BUILTIN_RULES:
    register_rule(_rule.name, summary=_rule.summary, statistic=_rule.statistic, twin=_rule.twin)(
        _rule.fn
    )


def rule_specs() -> dict[str, RuleSpec]:
    """Every registered rule, the built-in ones first."""
    return dict(_RULES)


def get_rule(name: str) -> RuleSpec:
    specs = rule_specs()
    if name not in specs:
        raise KeyError(name)
    return specs[name]
