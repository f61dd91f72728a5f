"""Threshold sensitivity of a gate: every threshold rule re-evaluated over a grid.

For each threshold rule and each complete condition it targets, the declared statistic and its
diagnostic twin (max gap for a mean-gap rule and vice versa) are swept over the grid: observed
value, declared threshold and verdict, the verdict at each grid point and the smallest threshold
at which it would pass. The verdicts use the same comparison as the rules
(`stagewise.analysis.thresholds.within`), so the grid at the declared threshold is the gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagewise.analysis.sensitivity import DEFAULT_GRID, Sweep, sweep
from stagewise.analysis.thresholds import within
from stagewise.gates.evaluate import Evaluation, describe_rule, evaluate_gate, rule_targets
from stagewise.gates.freeze import Candidates, frozen_as_written
from stagewise.gates.registry import get_rule
from stagewise.json_types import JsonObject
from stagewise.ledger import FreezeRecord, Ledger
from stagewise.plan import build_plan
from stagewise.study.model import Study


@dataclass(frozen=True)
class SensitivityRow:
    """One statistic of one condition under one threshold rule, swept over the grid."""

    rule_index: int
    rule: str
    rule_description: str
    condition_id: str
    label: str
    statistic: str
    declared: bool  # False: the diagnostic twin of the declared statistic
    declared_threshold: float
    sweep: Sweep

    @property
    def observed(self) -> float | None:
        return self.sweep.observed

    @property
    def verdict_at_declared_threshold(self) -> str | None:
        value = self.observed
        return (
            None
            if value is None
            else ("pass" if within(value, self.declared_threshold) else "fail")
        )

    @property
    def declared_verdict(self) -> str | None:
        return self.verdict_at_declared_threshold if self.declared else "diagnostic only"

    def to_json(self) -> JsonObject:
        return {
            "rule_index": self.rule_index,
            "rule": self.rule,
            "rule_description": self.rule_description,
            "condition_id": self.condition_id,
            "label": self.label,
            "statistic": self.statistic,
            "role": "declared" if self.declared else "diagnostic",
            "observed": self.observed,
            "declared_threshold": self.declared_threshold,
            "declared_verdict": self.declared_verdict,
            "verdict_at_declared_threshold": self.verdict_at_declared_threshold,
            "grid": [
                {"threshold": t, "verdict": v}
                for t, v in zip(self.sweep.grid, self.sweep.verdicts, strict=True)
            ],
            "smallest_passing_threshold": self.sweep.smallest_passing,
            "flip_threshold": self.sweep.flip_threshold,
            "note": self.sweep.note(),
        }


@dataclass(frozen=True)
class SensitivityGrid:
    """The object of `stagewise sensitivity --json`, typed."""

    gate: str
    kind: str
    frozen_sha256: str | None
    reference: str
    grid: tuple[float, ...]
    rows: tuple[SensitivityRow, ...]

    def declared_rows(self) -> tuple[SensitivityRow, ...]:
        return tuple(r for r in self.rows if r.declared)

    def to_json(self) -> JsonObject:
        return {
            "gate": self.gate,
            "kind": self.kind,
            "frozen_sha256": self.frozen_sha256,
            "reference": self.reference,
            "grid": list(self.grid),
            "rows": [r.to_json() for r in self.rows],
        }


def sensitivity(
    study: Study, ledger: Ledger, gate_id: str, grid: Sequence[float] = DEFAULT_GRID
) -> SensitivityGrid:
    """Every threshold rule of the gate swept over `grid`."""
    record = ledger.current_freeze(gate_id)
    candidates = build_plan(study, ledger).candidates
    frozen_sha = frozen_sha256(study, gate_id, record, candidates, files_only=ledger.rebuilt)
    ev = evaluate_gate(study, gate_id, ledger.runs(), candidates, with_stability=False)
    return sensitivity_of(ev, frozen_sha, grid)


def frozen_sha256(
    study: Study,
    gate_id: str,
    record: FreezeRecord | None,
    candidates: Candidates,
    *,
    files_only: bool = False,
) -> str | None:
    """The sha256 the grid is computed under: the current freeze's, provided the gate still
    reads as frozen (FrozenRuleMismatch otherwise); None for a gate never frozen."""
    if record is None:
        return None
    return frozen_as_written(study, gate_id, record, candidates, files_only=files_only).sha256


def sensitivity_of(
    ev: Evaluation, frozen_sha: str | None, grid: Sequence[float] = DEFAULT_GRID
) -> SensitivityGrid:
    """The grid of an evaluated gate (its stability need not have been computed)."""
    study, gate_id = ev.study, ev.gate.gate_id
    labels = {c.condition_id: c.label for c in study.conditions}
    rows: list[SensitivityRow] = []
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
                rows.append(
                    SensitivityRow(
                        rule_index=index,
                        rule=rule.rule,
                        rule_description=describe_rule(rule),
                        condition_id=cid,
                        label=labels.get(cid, cid),
                        statistic=statistic,
                        declared=is_declared,
                        declared_threshold=declared,
                        sweep=sweep(getattr(s, statistic), grid),
                    )
                )
    return SensitivityGrid(
        gate=gate_id,
        kind=ev.gate.kind,
        frozen_sha256=frozen_sha,
        reference=study.reference,
        grid=tuple(grid),
        rows=tuple(rows),
    )
