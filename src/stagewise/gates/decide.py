"""Applying a frozen gate: its typed result, the decision and its records in `decisions/`.

`gate_result` turns an evaluation into a `GateResult` (`stagewise.gates.results`);
`result_from_runs` does so read-only from run records (report, verify, the study driver).

`apply_gate` refuses a gate that is not frozen as written (FrozenRuleMismatch) or that holds a
manual decision (DecisionError), evaluates it over the pooled cells, records the computed
decision in the ledger (which feeds the stages whose candidates name this gate through the
plan) and writes the decision records `decisions/<gate>.{json,csv,md}` (`gates.records`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stagewise.analysis.cells import ResultLike
from stagewise.analysis.confidence import DEFAULT_CONFIDENCE
from stagewise.analysis.published import compare_with_published
from stagewise.analysis.run_checks import RunCheck, check_runs
from stagewise.errors import DecisionError
from stagewise.gates.confidence import DEFAULT_SEED, attach, verdict_confidence
from stagewise.gates.evaluate import Evaluation, describe_rule, evaluate_gate
from stagewise.gates.freeze import (
    amendment_history,
    foreign_recipe_error,
    require_frozen,
    split_by_recipe,
    summary,
)
from stagewise.gates.records import DECISIONS_DIR, GateRecord, write_records
from stagewise.gates.results import (
    CONDITION_KEYS,
    ComparisonNote,
    ConditionResult,
    FreezeSummary,
    GateResult,
    Incomplete,
    NotCounted,
    RuleView,
)
from stagewise.ledger import DecisionRecord, FreezeRecord, Ledger
from stagewise.ledger.integrity import canonical_json
from stagewise.paths import safe_join
from stagewise.plan import build_plan
from stagewise.study.model import Study

__all__ = [
    "CONDITION_KEYS",
    "DECISIONS_DIR",
    "AppliedGate",
    "apply_gate",
    "compute_gate",
    "gate_result",
    "result_from_runs",
    "write_records",
]


def condition_results(ev: Evaluation) -> tuple[ConditionResult, ...]:
    """One result per pooled condition: complete ones by mean then id, then the incomplete."""
    labels = {c.condition_id: c for c in ev.study.conditions}

    def order(cid: str) -> tuple[int, float, str]:
        s = ev.stats.conditions[cid]
        return (0 if s.complete else 1, s.mean_val_bpb if s.mean_val_bpb is not None else 0.0, cid)

    out = []
    for cid in sorted(ev.pool.conditions, key=order):
        s = ev.stats.conditions[cid]
        cond = labels.get(cid)
        out.append(
            ConditionResult.of(
                s,
                condition_id=cid,
                label=cond.label if cond else cid,
                role=cond.role if cond else "",
                verdict=ev.judgement.verdict(cid),
            )
        )
    return tuple(out)


def gate_result(
    ev: Evaluation,
    *,
    freeze: FreezeRecord | None,
    amendments: Iterable[FreezeSummary] = (),
    manual: Iterable[DecisionRecord] = (),
    confidence: float | None = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    not_counted: Iterable[NotCounted] = (),
) -> GateResult:
    """The typed result of an evaluated gate (nothing recorded).

    With a `confidence` level (the default), every condition also carries its bootstrap
    `interval`, `p_verdict` and `decisive` (`gates.confidence`); None leaves them out.
    """
    gate = ev.gate
    result = GateResult(
        gate=gate.gate_id,
        kind=gate.kind,
        frozen_sha256=freeze.sha256 if freeze else None,
        stages=tuple(gate.stages),
        budget_seconds=ev.study.stages[gate.stages[0]].budget_seconds,
        reference=ev.study.reference,
        cells=tuple(ev.cells),
        conditions=condition_results(ev),
        promoted=tuple(ev.promoted),
        incomplete=tuple(Incomplete(cid, tuple(cells)) for cid, cells in ev.pool.missing.items()),
        rules=tuple(RuleView(r.rule, describe_rule(r), r.reason, dict(r.raw)) for r in gate.rules),
        freeze=summary(freeze) if freeze else None,
        amendments=tuple(amendments),
        manual=tuple(manual),
        kendalls_w=ev.kendalls_w,
        host_pairs=tuple(ev.host_pairs),
        stability=tuple(ev.stability),
        not_counted=tuple(not_counted),
    )
    if confidence is None:
        return result
    return attach(result, verdict_confidence(ev, confidence=confidence, seed=seed))


def result_from_runs(
    study: Study,
    gate_id: str,
    runs: Iterable[ResultLike],
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    freeze: FreezeRecord | None = None,
    confidence: float | None = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    history: Iterable[FreezeRecord] = (),
) -> GateResult:
    """The gate's result computed read-only from run records (for reports and verification).

    With a `freeze` (and the gate's earlier freezes in `history`), only results of the frozen
    recipes count, as when the gate is applied; the others are listed in `not_counted`.
    """
    runs = list(runs)
    left_out: tuple[NotCounted, ...] = ()
    if freeze is not None:
        freezes = [f for f in history if f.id != freeze.id] + [freeze]
        split = split_by_recipe(study.gates[gate_id], freezes, runs)
        runs = list(split.counted)
        left_out = split.superseded + split.foreign
    return gate_result(
        evaluate_gate(study, gate_id, runs, candidates),
        freeze=freeze,
        confidence=confidence,
        seed=seed,
        not_counted=left_out,
    )


def compute_gate(
    study: Study,
    gate_id: str,
    runs: Iterable[ResultLike],
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    freeze: FreezeRecord | None = None,
) -> dict[str, Any]:
    """`result_from_runs(...).to_json()`: the JSON object, for callers that print or store it."""
    return result_from_runs(study, gate_id, runs, candidates, freeze=freeze).to_json()


@dataclass(frozen=True)
class AppliedGate:
    """A gate applied by `apply_gate`: its result, the decision in force, the files written.

    `recorded`: this call appended the decision (False when the outcome was the one already
    recorded, and always with `dry_run`). `decision` is None only for a dry run whose outcome
    differs from the recorded one (nothing was recorded, and nothing in force matches it).
    """

    result: GateResult
    evaluation: Evaluation
    decision: DecisionRecord | None
    freeze: FreezeRecord
    files: tuple[Path, ...]
    recorded: bool = True
    dry_run: bool = False
    checks: tuple[RunCheck, ...] = ()
    min_steps: int = 0

    @property
    def promoted(self) -> tuple[str, ...]:
        return self.result.promoted

    @property
    def record(self) -> GateRecord:
        """What the decision records and `stagewise gate --json` show of this call."""
        return GateRecord(self.result, self.recorded, self.dry_run, self.min_steps, self.checks)

    @property
    def object(self) -> dict[str, Any]:
        """The `stagewise gate --json` object: what `decisions/<gate>.json` holds, then whether
        this call recorded a decision, and the gate's runs flagged by `analysis.run_checks`."""
        return self.record.to_json()


def _same_outcome(
    active: DecisionRecord | None, promoted: Iterable[str], sha256: str, payload: Mapping[str, Any]
) -> bool:
    """Whether the active decision is already this computed outcome on these cells."""
    if active is None or active.kind != "computed" or active.frozen_sha256 != sha256:
        return False
    return tuple(active.promoted) == tuple(promoted) and canonical_json(
        active.payload
    ) == canonical_json(dict(payload))


def apply_gate(
    study: Study,
    ledger: Ledger,
    gate_id: str,
    *,
    confidence: float | None = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    dry_run: bool = False,
) -> AppliedGate:
    """Apply a frozen gate, record the computed decision and write `decisions/<gate>.*`.

    A decision is appended to the ledger only when the outcome (promoted set, verdicts, cells,
    frozen rule) differs from the one in force: applying a gate again with no new results
    records nothing. `dry_run` computes and returns the same result and writes nothing.
    `confidence` and `seed` set the level and the bootstrap seed of the verdict confidence
    added to the result; they never change a verdict or the recorded decision.
    """
    active = ledger.active_decision(gate_id)
    if active is not None and active.manual:
        raise DecisionError(
            f"gate {gate_id} holds a decision taken outside the tool ({active.reason}); "
            f"withdraw it first with `stagewise decide {study.root} {gate_id} --withdraw "
            f'--reason "..."`'
        )
    freeze = require_frozen(study, ledger, gate_id)
    # Refused before anything is recorded: `decisions/` must be the study's own folder, not a
    # link that would carry the records elsewhere.
    records_dir = safe_join(study.root, DECISIONS_DIR)
    runs = ledger.runs()
    split = split_by_recipe(study.gates[gate_id], ledger.freezes(gate_id), runs)
    if split.foreign:
        texts = ledger.recipe_texts(n.recipe_sha256 for n in split.foreign)
        raise foreign_recipe_error(gate_id, split, freeze, texts)
    ev = evaluate_gate(study, gate_id, split.counted, build_plan(study, ledger).candidates)
    if not ev.pool.complete:
        missing = ", ".join(sorted(ev.pool.missing)) or "none planned"
        raise DecisionError(
            f"gate {gate_id} has no complete condition yet (a succeeded result in every cell of "
            f"{', '.join(ev.gate.stages)}); incomplete: {missing}"
        )
    result = gate_result(
        ev,
        freeze=freeze,
        amendments=amendment_history(ledger, gate_id),
        manual=[d for d in ledger.decisions(gate_id) if d.manual],
        confidence=confidence,
        seed=seed,
        not_counted=split.superseded,
    )
    payload = {
        "verdicts": ev.judgement.verdicts,
        "incomplete": sorted(ev.pool.missing),
        "cells": len(ev.cells),
        # results left out for a recipe an amendment replaced (key only when there are any)
        **({"not_counted": [n.to_json() for n in split.superseded]} if split.superseded else {}),
    }
    # Looking must not change the record: the same outcome on the same cells is recorded once.
    unchanged = _same_outcome(active, ev.promoted, freeze.sha256, payload)
    decision: DecisionRecord | None = active if unchanged else None
    if not unchanged and not dry_run:
        decision = ledger.record_decision(
            gate_id,
            "computed",
            ev.promoted,
            reason=f"{ev.gate.kind} gate applied to {len(ev.cells)} cells",
            source="stagewise gate",
            frozen_sha256=freeze.sha256,
            payload=payload,
        )
    notes = compare_with_published(
        study.root, ev.gate.stages, [c.to_json() for c in result.conditions]
    )
    result = replace(
        result,
        decision=decision,
        published_comparison=tuple(ComparisonNote(**n) for n in notes),
    )
    budgets = {sid: st.budget_seconds for sid, st in study.stages.items()}
    counted = {id(r) for r in split.counted}  # flag only the results the gate counted
    checks = check_runs(
        [r for r in runs if id(r) in counted], budgets, study.min_steps, stages=ev.gate.stages
    )
    applied = AppliedGate(
        result,
        ev,
        decision,
        freeze,
        (),
        recorded=not unchanged and not dry_run,
        dry_run=dry_run,
        checks=tuple(checks),
        min_steps=study.min_steps,
    )
    # The records are the `gate --json` object of the call that recorded the decision; a look
    # that changes nothing leaves them as they are (they are rewritten only when missing).
    if dry_run or (unchanged and safe_join(records_dir, f"{gate_id}.json").is_file()):
        return applied
    return replace(applied, files=write_records(records_dir, applied.record))
