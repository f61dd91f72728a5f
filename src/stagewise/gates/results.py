"""What a gate produces, as frozen records: `GateResult` of `ConditionResult`s with `Verdict`s.

Every consumer (the CLI's `--json`, `decisions/<gate>.*`, the report, the bundle, `verify`, the
demo and the study driver) reads these records or their `to_json()` form, which is the
`stagewise gate --json` object. Its keys and their order are a contract: add keys at the end,
never rename or drop one.

A reason is structured: the rule that gave it (index and rule id), what the rule said
(`outcome`: selected / not selected / holds / fails, or why no rule applied) and the human
text. Code asks `Verdict.decided_by()` instead of parsing the text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

from stagewise.analysis.agreement import HostPair, LeaveOneOut
from stagewise.analysis.cells import Cell
from stagewise.analysis.confidence import Interval
from stagewise.analysis.stats import ConditionNumbers
from stagewise.analysis.variance import VarianceComponents
from stagewise.gates.wording import BOOTSTRAP_METHOD, confidence_method
from stagewise.json_types import JsonObject, JsonValue
from stagewise.ledger import DecisionRecord, FreezeRecord

# What a reason can be about: a rule's outcome, or why no rule's outcome applies.
REASON_KINDS = ("rule", "incomplete", "no_rule")
# The verdicts a gate gives, and the one that carries a condition forward for each gate kind.
VERDICTS = ("promote", "stop", "pass", "fail", "incomplete", "untested")
GOOD_VERDICT = {"promote": "promote", "confirm": "pass"}

CONDITION_KEYS = (
    "condition_id",
    "label",
    "role",
    "n_cells",
    "mean_val_bpb",
    "sd_val_bpb",
    "mean_rank",
    "best_rank",
    "worst_rank",
    "first_rank_cells",
    "gap_from_best",
    "mean_gap_to_reference",
    "max_gap_to_reference",
    "params_M",
    "tokens_M",
    "training_hours",
    "verdict",
    "reasons",
)


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those are written as null."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Reason:
    """One line of a verdict: which rule said what, and the human text."""

    kind: str  # one of REASON_KINDS
    text: str
    rule_index: int | None = None  # position in the gate's `rules = [...]`
    rule: str | None = None  # the rule id, e.g. "max_gap_to_reference"
    holds: bool | None = None  # the rule's outcome for this condition
    declared: str | None = None  # the rule's declared reason in study.toml
    description: str | None = None  # the rule as `describe_rule` writes it

    def __post_init__(self) -> None:
        if self.kind not in REASON_KINDS:
            raise ValueError(f"reason kind must be one of {REASON_KINDS}, but got {self.kind!r}")
        if self.kind == "rule" and (self.rule_index is None or self.rule is None):
            raise ValueError(f"a rule reason needs its rule index and id: {self.text!r}")

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> str:
        # The gate JSON contract writes a reason as its text.
        return self.text


@dataclass(frozen=True)
class Verdict:
    """A condition's verdict and the reasons behind it."""

    value: str  # one of VERDICTS
    reasons: tuple[Reason, ...]

    def __post_init__(self) -> None:
        if self.value not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, but got {self.value!r}")

    def decided_by(self) -> tuple[Reason, ...]:
        """The rule reasons that produced this verdict: the rules that selected a promoted
        condition, that held for a passed one, or that failed for a failed one."""
        wanted = {"promote": True, "pass": True, "fail": False}.get(self.value)
        if wanted is None:
            return ()
        return tuple(r for r in self.reasons if r.kind == "rule" and r.holds is wanted)

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(r.text for r in self.reasons)

    def why(self) -> str:
        """The declared reason (else the rule) of the first rule that decided this verdict."""
        for reason in self.decided_by():
            return reason.declared or reason.description or reason.text
        return ""


# The statistics a condition's verdict confidence gives an interval of, in JSON order.
INTERVAL_KEYS = ("mean", "mean_gap", "max_gap")
Bounds = tuple[float | None, float | None]


@dataclass(frozen=True)
class Intervals:
    """A condition's percentile intervals at one level: (low, high) of its mean, mean gap and
    max gap to the reference; None where a statistic is undefined."""

    level: float
    mean: Bounds | None
    mean_gap: Bounds | None
    max_gap: Bounds | None

    @classmethod
    def of(cls, row: Mapping[str, Interval], level: float) -> Intervals:
        def bounds(key: str) -> Bounds | None:
            iv = row.get(key)
            return None if iv is None else (finite(iv.lo), finite(iv.hi))

        return cls(level, bounds("mean"), bounds("mean_gap"), bounds("max_gap"))

    def bounds(self, key: str) -> Bounds | None:
        """The interval of `key` (one of INTERVAL_KEYS)."""
        value: Bounds | None = getattr(self, key)
        return value

    def to_json(self) -> JsonObject:
        out: JsonObject = {"confidence": self.level}
        for key in INTERVAL_KEYS:
            pair = self.bounds(key)
            out[key] = None if pair is None else list(pair)
        return out


@dataclass(frozen=True)
class ConditionConfidence:
    """One condition's intervals and how often the replicates return its verdict."""

    condition_id: str
    verdict: str
    interval: Intervals | None  # None for an incomplete condition
    p_verdict: float | None
    decisive: bool | None
    verdicts: Mapping[str, int] | None  # replicate verdict -> count (None: not resampled)
    variance: VarianceComponents | None  # of its gaps to the reference

    @classmethod
    def absent(cls, condition_id: str) -> ConditionConfidence:
        """A condition the bootstrap did not see: null interval, p_verdict and decisive."""
        return cls(condition_id, "", None, None, None, None, None)

    def fields(self) -> JsonObject:
        """The keys added to the condition's entry in the gate JSON."""
        out: JsonObject = {
            "interval": self.interval.to_json() if self.interval is not None else None,
            "p_verdict": self.p_verdict,
            "decisive": self.decisive,
        }
        if self.verdicts is not None:
            out["replicate_verdicts"] = dict(self.verdicts)
        return out


@dataclass(frozen=True)
class GateConfidence:
    """Verdict confidence and variance components of one evaluated gate."""

    gate: str
    confidence: float
    seed: int
    replicates: int  # bootstrap replicates of the intervals
    verdict_replicates: int  # replicates judged for p_verdict
    hosts: int
    cells: int
    notes: tuple[str, ...]
    conditions: tuple[ConditionConfidence, ...]
    variance: VarianceComponents | None  # pooled over non-reference complete conditions

    def condition(self, condition_id: str) -> ConditionConfidence | None:
        return next((c for c in self.conditions if c.condition_id == condition_id), None)

    @property
    def method_sentence(self) -> str:
        """How these numbers were computed, as every rendering prints it (gates.wording)."""
        return confidence_method(
            self.seed, self.verdict_replicates, self.replicates, self.confidence
        )

    def to_json(self) -> JsonObject:
        return {
            "confidence": self.confidence,
            "seed": self.seed,
            "method": BOOTSTRAP_METHOD,
            "replicates": self.replicates,
            "verdict_replicates": self.verdict_replicates,
            "hosts": self.hosts,
            "cells": self.cells,
            "notes": list(self.notes),
            "variance": {
                "pooled": self.variance.to_json() if self.variance is not None else None,
                "conditions": {
                    c.condition_id: c.variance.to_json()
                    for c in self.conditions
                    if c.variance is not None
                },
            },
        }


@dataclass(frozen=True)
class ConditionResult(ConditionNumbers):
    """One pooled condition of a gate: its statistics (unrounded) and its verdict.

    `extra` holds optional fields added by later analyses (e.g. a decision-confidence
    interval); they are written after the contract keys, in insertion order, and never
    replace one.
    """

    condition_id: str
    label: str
    role: str
    verdict: Verdict
    confidence: ConditionConfidence | None = None  # with a confidence level (gates.confidence)
    extra: Mapping[str, JsonValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = set(self.extra) & set(CONDITION_KEYS)
        if clash:
            raise ValueError(f"extra fields may not replace contract keys: {sorted(clash)}")

    @classmethod
    def of(
        cls,
        numbers: ConditionNumbers,
        *,
        condition_id: str,
        label: str,
        role: str,
        verdict: Verdict,
    ) -> ConditionResult:
        """The result of a condition whose pooled numbers are `numbers` (its `ConditionStats`)."""
        pooled = {f.name: getattr(numbers, f.name) for f in fields(ConditionNumbers)}
        return cls(**pooled, condition_id=condition_id, label=label, role=role, verdict=verdict)

    def with_extra(self, **more: JsonValue) -> ConditionResult:
        """A copy with more optional fields (existing extra keys are kept, in order)."""
        return replace(self, extra={**self.extra, **more})

    def shown(self, key: str) -> str | int | float | None:
        """A contract number (or id, label, role) as the JSON writes it: NaN and infinity
        as None."""
        value: str | int | float | None = getattr(self, key)
        return finite(value) if isinstance(value, float) else value

    def number(self, key: str) -> float | None:
        value = getattr(self, key)
        return None if value is None else float(value)

    def to_json(self) -> JsonObject:
        out: JsonObject = {}
        for key in CONDITION_KEYS:
            if key == "verdict":
                out[key] = self.verdict.value
            elif key == "reasons":
                out[key] = [r.to_json() for r in self.verdict.reasons]
            else:
                value = getattr(self, key)
                out[key] = finite(value) if isinstance(value, float) else value
        if self.confidence is not None:
            out.update(self.confidence.fields())
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class RuleView:
    """A gate rule as the result shows it."""

    rule: str
    description: str
    reason: str | None
    raw: Mapping[str, JsonValue]  # the rule's own settings in study.toml (k, threshold)

    def to_json(self) -> JsonObject:
        return {
            "rule": self.rule,
            "description": self.description,
            "reason": self.reason,
            **self.raw,
        }


@dataclass(frozen=True)
class Incomplete:
    condition_id: str
    missing: tuple[Cell, ...]

    def to_json(self) -> JsonObject:
        return {"condition_id": self.condition_id, "missing": [c.to_dict() for c in self.missing]}


@dataclass(frozen=True)
class ComparisonNote:
    """Where a recomputed number reads differently from a published table at its precision."""

    table: str
    label: str
    column: str
    recomputed: float
    published: str
    abs_diff: float

    def to_json(self) -> JsonObject:
        return {
            "table": self.table,
            "label": self.label,
            "column": self.column,
            "recomputed": self.recomputed,
            "published": self.published,
            "abs_diff": self.abs_diff,
        }


@dataclass(frozen=True)
class FreezeSummary:
    """One freeze or amendment of a gate, as its result and history show it."""

    kind: str  # "freeze" | "amend"
    sha256: str  # of the whole record
    frozen_sha256: str | None  # of the frozen definition alone
    frozen_at: str
    post_hoc: bool
    reason: str | None
    results_at_freeze: int
    # condition -> frozen recipe sha256, or "recipes not frozen (format 1)"; None: not shown
    recipes: Mapping[str, str] | str | None = None

    @classmethod
    def of(
        cls,
        record: FreezeRecord,
        frozen_sha256: str | None,
        recipes: Mapping[str, str] | str | None = None,
    ) -> FreezeSummary:
        return cls(
            record.kind,
            record.sha256,
            frozen_sha256,
            record.frozen_at,
            record.post_hoc,
            record.reason,
            len(record.results_at_freeze),
            recipes,
        )

    def to_json(self) -> JsonObject:
        """The result's `freeze` object."""
        out: JsonObject = {
            "sha256": self.sha256,
            "definition_sha256": self.frozen_sha256,
            "kind": self.kind,
            "frozen_at": self.frozen_at,
            "post_hoc": self.post_hoc,
            "results_at_freeze": self.results_at_freeze,
            "reason": self.reason,
        }
        if self.recipes is not None:
            out["recipes"] = self.recipes if isinstance(self.recipes, str) else dict(self.recipes)
        return out

    def history_json(self) -> JsonObject:
        """One entry of the result's `amendments` (and `freeze --json`'s `history`)."""
        return {
            "kind": self.kind,
            "sha256": self.sha256,
            "frozen_sha256": self.frozen_sha256,
            "frozen_at": self.frozen_at,
            "post_hoc": self.post_hoc,
            "reason": self.reason,
            "results_at_freeze": self.results_at_freeze,
        }


def manual_json(decision: DecisionRecord) -> JsonObject:
    return {
        "promoted": list(decision.promoted),
        "reason": decision.reason,
        "source": decision.source,
        "decided_at": decision.decided_at,
        "withdrawn_at": decision.withdrawn_at,
        "withdraw_reason": decision.withdraw_reason,
    }


@dataclass(frozen=True)
class NotCounted:
    """A result of the gate's stages that the gate does not count, and why."""

    run: str  # "stage/condition/seedN/host"
    condition_id: str
    recipe_sha256: str
    why: str

    def to_json(self) -> JsonObject:
        return {
            "run": self.run,
            "condition_id": self.condition_id,
            "recipe_sha256": self.recipe_sha256,
            "why": self.why,
        }


@dataclass(frozen=True)
class GateResult:
    """A gate evaluated over its pooled cells, with its freeze and decision context.

    `decision` and `published_comparison` are present only once the gate is applied
    (`stagewise gate`); a read-only evaluation (report, verify) leaves them None and its JSON
    has neither key.
    """

    gate: str
    kind: str
    frozen_sha256: str | None
    stages: tuple[str, ...]
    budget_seconds: float
    reference: str
    cells: tuple[Cell, ...]
    conditions: tuple[ConditionResult, ...]
    promoted: tuple[str, ...]
    incomplete: tuple[Incomplete, ...]
    rules: tuple[RuleView, ...]
    freeze: FreezeSummary | None  # the current freeze
    amendments: tuple[FreezeSummary, ...]  # every freeze and amendment, oldest first
    manual: tuple[DecisionRecord, ...]
    kendalls_w: float | None
    host_pairs: tuple[HostPair, ...]
    stability: tuple[LeaveOneOut, ...]
    decision: DecisionRecord | None = None
    published_comparison: tuple[ComparisonNote, ...] | None = None
    # Verdict confidence and variance components (gates.confidence.verdict_confidence).
    confidence: GateConfidence | None = None
    # Results of the gate's stages left out because they trained a recipe other than the one
    # frozen now (gates.freeze.split_by_recipe); in the JSON only when there are any.
    not_counted: tuple[NotCounted, ...] = ()

    def condition(self, condition_id: str) -> ConditionResult:
        for c in self.conditions:
            if c.condition_id == condition_id:
                return c
        raise KeyError(condition_id)

    @property
    def good_verdict(self) -> str:
        """The verdict that carries a condition forward: promote, or pass for a confirm gate."""
        return GOOD_VERDICT.get(self.kind, "promote")

    @property
    def stability_changed(self) -> int:
        return sum(1 for s in self.stability if s.changed)

    def to_json(self) -> JsonObject:
        """The `stagewise gate --json` object (its first keys are the contract)."""
        n = len(self.stability)
        changed = self.stability_changed
        out: JsonObject = {
            "gate": self.gate,
            "kind": self.kind,
            "frozen_sha256": self.frozen_sha256,
            "stages": list(self.stages),
            "budget_seconds": self.budget_seconds,
            "reference": self.reference,
            "cells": [c.to_dict() for c in self.cells],
            "conditions": [c.to_json() for c in self.conditions],
            "promoted": list(self.promoted),
            "incomplete": [i.to_json() for i in self.incomplete],
            # extras
            "rules": [r.to_json() for r in self.rules],
            "freeze": self.freeze.to_json() if self.freeze is not None else None,
            "amendments": [a.history_json() for a in self.amendments],
            "manual": [manual_json(d) for d in self.manual],
            "agreement": {
                "kendalls_w": finite(self.kendalls_w),
                "hosts": [p.to_dict() for p in self.host_pairs],
            },
            "stability": {
                "cells_left_out": n,
                "changed": changed,
                "unchanged_fraction": (n - changed) / n if n else None,
                "per_cell": [s.to_dict() for s in self.stability],
            },
        }
        if self.decision is not None:
            out["decision"] = {"kind": self.decision.kind, "decided_at": self.decision.decided_at}
        if self.published_comparison is not None:
            out["published_comparison"] = [c.to_json() for c in self.published_comparison]
        if self.confidence is not None:
            out["confidence"] = self.confidence.to_json()
        if self.not_counted:
            out["not_counted"] = [n.to_json() for n in self.not_counted]
        return out
