"""Threshold sensitivity of a gate: every threshold rule re-evaluated over a grid.

For each threshold rule and each complete condition it targets, the declared statistic and its
diagnostic twin (max gap for a mean-gap rule and vice versa) are swept over the grid: observed
value, declared threshold and verdict, the verdict at each grid point and the smallest threshold
at which it would pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stagewise.analysis.sensitivity import DEFAULT_GRID, passes, sweep
from stagewise.gates.decide import plan_candidates
from stagewise.gates.evaluate import describe_rule, evaluate_gate, rule_targets
from stagewise.gates.freeze import changes_since_freeze, require_frozen
from stagewise.gates.registry import get_rule
from stagewise.ledger import Ledger
from stagewise.study.model import Study


def sensitivity(
    study: Study, ledger: Ledger, gate_id: str, grid: Sequence[float] = DEFAULT_GRID
) -> dict[str, Any]:
    """The sensitivity object of `stagewise sensitivity --json`."""
    frozen_sha = None
    if ledger.current_freeze(gate_id) is not None:
        frozen_sha = require_frozen(study, ledger, gate_id).sha256
    else:
        changes_since_freeze(study, ledger, gate_id)  # validates the gate id
    ev = evaluate_gate(
        study, gate_id, ledger.runs(), plan_candidates(study, ledger), with_stability=False
    )
    labels = {c.condition_id: c.label for c in study.conditions}
    rows: list[dict[str, Any]] = []
    for index, rule in enumerate(ev.gate.rules):
        spec = get_rule(rule.rule)
        if spec.threshold_param is None or spec.statistic is None:
            continue
        declared = float(rule.params[spec.threshold_param])
        statistics = [(spec.statistic, True)]
        if spec.twin is not None:
            twin = get_rule(spec.twin)
            if twin.statistic is not None:
                statistics.append((twin.statistic, False))
        for cid in rule_targets(rule, study, ev.stats.complete):
            s = ev.stats.conditions[cid]
            for statistic, is_declared in statistics:
                value = getattr(s, statistic)
                sw = sweep(value, grid)
                at_declared = (
                    None if value is None else ("pass" if passes(value, declared) else "fail")
                )
                rows.append(
                    {
                        "rule_index": index,
                        "rule": rule.rule,
                        "rule_description": describe_rule(rule),
                        "condition_id": cid,
                        "label": labels.get(cid, cid),
                        "statistic": statistic,
                        "role": "declared" if is_declared else "diagnostic",
                        "observed": value,
                        "declared_threshold": declared,
                        "declared_verdict": at_declared if is_declared else "diagnostic only",
                        "verdict_at_declared_threshold": at_declared,
                        "grid": [
                            {"threshold": t, "verdict": v}
                            for t, v in zip(sw.grid, sw.verdicts, strict=True)
                        ],
                        "smallest_passing_threshold": sw.smallest_passing,
                        "flip_threshold": sw.flip_threshold,
                        "note": sw.note(),
                    }
                )
    return {
        "gate": gate_id,
        "kind": ev.gate.kind,
        "frozen_sha256": frozen_sha,
        "reference": study.reference,
        "grid": list(grid),
        "rows": rows,
    }
