"""What each gate rule takes in `study.toml`: its parameters and their types.

The loader validates `rules = [...]` at the boundary, before anything runs, but the rule functions
live in the gates layer above the study. So the parameters of the built-in rules are declared here,
as data, once; `gates.registry.register_rule` reads them for the built-ins and declares a plug-in
rule's parameters here when it registers one.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuleParams:
    name: str
    required: dict[str, type] = field(default_factory=dict)
    optional: dict[str, type] = field(default_factory=dict)
    threshold_param: str | None = None  # the parameter a sensitivity grid varies


_THRESHOLD: dict[str, type] = {"threshold": float}

_DECLARED: dict[str, RuleParams] = {
    p.name: p
    for p in (
        RuleParams("best_k", required={"k": int}),
        RuleParams("within_gap_of_best", required=dict(_THRESHOLD), threshold_param="threshold"),
        RuleParams("keep"),
        RuleParams("rank_first_in_all_cells"),
        RuleParams("max_gap_to_reference", required=dict(_THRESHOLD), threshold_param="threshold"),
        RuleParams("mean_gap_to_reference", required=dict(_THRESHOLD), threshold_param="threshold"),
    )
}


def declare_rule_params(params: RuleParams) -> None:
    """Make a rule's parameters known to the loader (a plug-in rule, on registration)."""
    _DECLARED[params.name] = params


def rule_params() -> dict[str, RuleParams]:
    return dict(_DECLARED)


def declared(name: str) -> RuleParams | None:
    return _DECLARED.get(name)
