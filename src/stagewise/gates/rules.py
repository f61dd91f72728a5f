"""Built-in gate rules: one small function each, registered under its study-file name.

Each receives the rule, the pooled statistics and the complete conditions it targets, and says
for each of those whether the rule holds, with the numbers behind it. A promote gate promotes
the union of what its rules select; a confirm gate passes a condition when every rule targeting
it holds.
"""

from __future__ import annotations

from collections.abc import Callable

from stagewise.analysis.stats import PoolStats
from stagewise.analysis.thresholds import threshold_text, within
from stagewise.gates.rule_check import BuiltinRule, RuleCheck, RuleFn
from stagewise.study.model import Rule

# Every built-in rule in registry order; `gates.registry` registers this list.
BUILTIN_RULES: list[BuiltinRule] = []


def _builtin(
    name: str, *, summary: str, statistic: str | None = None, twin: str | None = None
) -> Callable[[RuleFn], RuleFn]:
    def add(fn: RuleFn) -> RuleFn:
        BUILTIN_RULES.append(BuiltinRule(name, fn, summary, statistic, twin))
        return fn

    return add


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6f}"


@_builtin("best_k", summary="the k lowest means")
def best_k(rule: Rule, stats: PoolStats, targets: tuple[str, ...]) -> dict[str, RuleCheck]:
    """The k lowest means (ties broken by mean rank, then condition id)."""
    k = int(rule.params["k"])

    def key(cid: str) -> tuple[float, float, str]:
        s = stats.conditions[cid]
        assert s.mean_val_bpb is not None and s.mean_rank is not None
        return (s.mean_val_bpb, s.mean_rank, cid)

    order = sorted(targets, key=key)
    out = {}
    for pos, cid in enumerate(order, start=1):
        s = stats.conditions[cid]
        out[cid] = RuleCheck(
            pos <= k,
            f"mean {_f(s.mean_val_bpb)} is #{pos} of {len(order)} by mean (k={k})",
            s.mean_val_bpb,
        )
    return out


@_builtin(
    "within_gap_of_best",
    summary="mean - best mean <= threshold",
    statistic="gap_from_best",
)
def within_gap_of_best(
    rule: Rule, stats: PoolStats, targets: tuple[str, ...]
) -> dict[str, RuleCheck]:
    """Mean minus the best mean of the gate is at most the threshold."""
    t = float(rule.params["threshold"])
    out = {}
    for cid in targets:
        gap = stats.conditions[cid].gap_from_best
        assert gap is not None
        out[cid] = RuleCheck(
            within(gap, t), f"gap from best {_f(gap)} vs <= {threshold_text(t)}", gap, t
        )
    return out


@_builtin("keep", summary="the targeted conditions regardless of rank")
def keep(rule: Rule, stats: PoolStats, targets: tuple[str, ...]) -> dict[str, RuleCheck]:
    """The targeted conditions, regardless of rank."""
    return {cid: RuleCheck(True, "kept regardless of rank") for cid in targets}


@_builtin("rank_first_in_all_cells", summary="rank 1 in every cell")
def rank_first_in_all_cells(
    rule: Rule, stats: PoolStats, targets: tuple[str, ...]
) -> dict[str, RuleCheck]:
    """Rank 1 (ties share it) in every pooled host-seed cell."""
    n = len(stats.cells)
    out = {}
    for cid in targets:
        first = stats.conditions[cid].first_rank_cells or 0
        out[cid] = RuleCheck(n > 0 and first == n, f"rank 1 in {first}/{n} cells", float(first))
    return out


def _reference_gap_check(stats: PoolStats, cid: str, threshold: float, statistic: str) -> RuleCheck:
    s = stats.conditions[cid]
    missing = stats.reference_missing()
    if missing:
        cells = ", ".join(c.label for c in missing)
        return RuleCheck(
            False,
            f"reference {stats.reference} has no result in {cells}: gap to reference undefined",
            None,
            threshold,
        )
    if statistic == "max":
        value = s.max_gap_to_reference
        assert value is not None
        worst = max(s.cell_gaps, key=lambda c: (s.cell_gaps[c], c))
        detail = (
            f"max gap to reference {_f(value)} ({worst.label}) vs <= {threshold_text(threshold)}"
        )
    else:
        value = s.mean_gap_to_reference
        assert value is not None
        detail = f"mean gap to reference {_f(value)} over {len(s.cell_gaps)} cells vs <= {threshold_text(threshold)}"
    return RuleCheck(within(value, threshold), detail, value, threshold)


@_builtin(
    "max_gap_to_reference",
    summary="in every cell, value - reference value <= threshold",
    statistic="max_gap_to_reference",
    twin="mean_gap_to_reference",
)
def max_gap_to_reference(
    rule: Rule, stats: PoolStats, targets: tuple[str, ...]
) -> dict[str, RuleCheck]:
    """In every cell, val_bpb minus the reference's val_bpb is at most the threshold."""
    t = float(rule.params["threshold"])
    return {cid: _reference_gap_check(stats, cid, t, "max") for cid in targets}


@_builtin(
    "mean_gap_to_reference",
    summary="mean over cells of the gap to the reference <= threshold",
    statistic="mean_gap_to_reference",
    twin="max_gap_to_reference",
)
def mean_gap_to_reference(
    rule: Rule, stats: PoolStats, targets: tuple[str, ...]
) -> dict[str, RuleCheck]:
    """The mean over cells of (val_bpb - reference val_bpb) is at most the threshold."""
    t = float(rule.params["threshold"])
    return {cid: _reference_gap_check(stats, cid, t, "mean") for cid in targets}
