"""The rule registry: each gate rule is one small function registered under its study-file name.

A rule receives the pooled statistics of a gate (see `stagewise.gates.context`) and returns, for
each condition it judges, whether it holds and the numbers behind that. The study loader uses
the declared parameter names to validate `rules = [...]` before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RuleFn = Callable[..., Any]


@dataclass(frozen=True)
class RuleSpec:
    name: str
    fn: RuleFn
    required: dict[str, type]
    optional: dict[str, type]
    threshold_param: str | None
    summary: str


_RULES: dict[str, RuleSpec] = {}


def register_rule(
    name: str,
    *,
    required: dict[str, type] | None = None,
    optional: dict[str, type] | None = None,
    threshold_param: str | None = None,
    summary: str = "",
) -> Callable[[RuleFn], RuleFn]:
    """Decorator: make `fn` available to study files as `{ rule = "<name>", ... }`."""

    def wrap(fn: RuleFn) -> RuleFn:
        _RULES[name] = RuleSpec(
            name=name,
            fn=fn,
            required=dict(required or {}),
            optional=dict(optional or {}),
            threshold_param=threshold_param,
            summary=summary or (fn.__doc__ or "").strip().splitlines()[0:1][0]
            if fn.__doc__
            else summary,
        )
        return fn

    return wrap


def rule_specs() -> dict[str, RuleSpec]:
    """Every registered rule, loading the built-in ones first."""
    from stagewise.gates import rules as _builtin  # noqa: F401  (registers on import)

    return dict(_RULES)


def get_rule(name: str) -> RuleSpec:
    specs = rule_specs()
    if name not in specs:
        raise KeyError(name)
    return specs[name]
