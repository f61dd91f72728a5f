"""Applying a frozen gate: its typed result, the decision and its records in `decisions/`.

`gate_result` turns an evaluation into a `GateResult` (`stagewise.gates.results`);
`result_from_runs` does so read-only from run records (report, verify, the study driver).

`apply_gate` refuses a gate that is not frozen as written (FrozenRuleMismatch) or that holds a
manual decision (DecisionError), evaluates it over the pooled cells, records the computed
decision in the ledger (which feeds the stages whose candidates name this gate through the
plan) and writes `decisions/<gate>.json` (exactly the `stagewise gate --json` object), `.csv`
(one row per condition) and `.md` (a human-readable record).
"""

from __future__ import annotations

import csv
import io
import json
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
    parse,
    recipes_summary,
    require_frozen,
    split_by_recipe,
)
from stagewise.gates.results import (
    CONDITION_KEYS,
    ComparisonNote,
    ConditionResult,
    GateResult,
    Incomplete,
    NotCounted,
    RuleView,
    freeze_json,
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

DECISIONS_DIR = "decisions"


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
            ConditionResult(
                condition_id=cid,
                label=cond.label if cond else cid,
                role=cond.role if cond else "",
                n_cells=s.n_cells,
                mean_val_bpb=s.mean_val_bpb,
                sd_val_bpb=s.sd_val_bpb,
                mean_rank=s.mean_rank,
                best_rank=s.best_rank,
                worst_rank=s.worst_rank,
                first_rank_cells=s.first_rank_cells,
                gap_from_best=s.gap_from_best,
                mean_gap_to_reference=s.mean_gap_to_reference,
                max_gap_to_reference=s.max_gap_to_reference,
                params_M=s.params_M,
                tokens_M=s.tokens_M,
                training_hours=s.training_hours,
                verdict=ev.judgement.verdict(cid),
            )
        )
    return tuple(out)


def gate_result(
    ev: Evaluation,
    *,
    freeze: FreezeRecord | None,
    amendments: Iterable[Mapping[str, Any]] = (),
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
        freeze=freeze_json(freeze, parse(freeze).get("frozen_sha256"), recipes_summary(freeze))
        if freeze
        else None,
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
    def object(self) -> dict[str, Any]:
        """The `stagewise gate --json` object: what `decisions/<gate>.json` holds, then whether
        this call recorded a decision, and the gate's runs flagged by `analysis.run_checks`."""
        return {
            **self.result.to_json(),
            "decision_recorded": self.recorded,
            "dry_run": self.dry_run,
            "min_steps": self.min_steps,
            "flagged_runs": [c.to_json() for c in self.checks if c.flags],
        }


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
    return replace(applied, files=write_records(records_dir, applied.object))


# ---------------------------------------------------------------------- records on disk
def gate_json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# Verdict-confidence columns appended to the CSV record when the result carries them.
CONFIDENCE_COLUMNS = (
    "p_verdict",
    "decisive",
    "mean_low",
    "mean_high",
    "mean_gap_low",
    "mean_gap_high",
    "max_gap_low",
    "max_gap_high",
)


def _confidence_cells(row: Mapping[str, Any]) -> list[Any]:
    iv = row.get("interval") or {}
    out: list[Any] = [row.get("p_verdict"), row.get("decisive")]
    for key in ("mean", "mean_gap", "max_gap"):
        pair = iv.get(key) or (None, None)
        out += list(pair)
    return ["" if v is None else v for v in out]


def gate_csv(obj: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with_conf = obj.get("confidence") is not None
    writer.writerow(CONDITION_KEYS + (CONFIDENCE_COLUMNS if with_conf else ()))
    for row in obj["conditions"]:
        writer.writerow(
            [
                "; ".join(row[k]) if k == "reasons" else ("" if row[k] is None else row[k])
                for k in CONDITION_KEYS
            ]
            + (_confidence_cells(row) if with_conf else [])
        )
    return buf.getvalue()


def confidence_markdown(obj: Mapping[str, Any]) -> list[str]:
    """The record's verdict-confidence section (empty when the result carries none)."""
    conf = obj.get("confidence")
    if conf is None:
        return []
    level = conf["confidence"]
    lines = [
        "## Verdict confidence",
        "",
        f"Blocked bootstrap (host blocks resampled, seeds within hosts; seed {conf['seed']}): "
        f"{conf['verdict_replicates']} replicates with every rule of the gate re-applied; "
        f"`p_verdict` is the share returning the observed verdict, decisive when >= {level:g}. "
        f"Intervals are {level:.0%} percentile intervals over {conf['replicates']} replicates. "
        "Descriptive, not a significance test (docs/confidence.md).",
        "",
        "| condition | verdict | p_verdict | decisive | mean | mean gap to ref | max gap to ref |",
        "|---|---|---|---|---|---|---|",
    ]

    def pair(v: Any) -> str:
        return "-" if not v else f"[{_f(v[0])}, {_f(v[1])}]"

    for r in obj["conditions"]:
        iv = r.get("interval") or {}
        decisive = "-" if r.get("decisive") is None else ("yes" if r["decisive"] else "**no**")
        lines.append(
            f"| {r['condition_id']} | {r['verdict']} | {_f(r.get('p_verdict'), 3)} | {decisive} "
            f"| {pair(iv.get('mean'))} | {pair(iv.get('mean_gap'))} | {pair(iv.get('max_gap'))} |"
        )
    pooled = (conf.get("variance") or {}).get("pooled")
    if pooled:
        lines += [
            "",
            "Variance components of the gaps to the reference (pooled over conditions): "
            f"condition-by-host sd {_f(pooled['sd_host'])} (df {pooled['df_host']}), "
            f"within-host seed sd {_f(pooled['sd_seed'])} (df {pooled['df_seed']}).",
        ]
    lines += [f"- note: {n}" for n in conf.get("notes", [])]
    return [*lines, ""]


def _f(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def gate_markdown(obj: Mapping[str, Any]) -> str:
    freeze = obj.get("freeze") or {}
    lines = [
        f"# Gate {obj['gate']} ({obj['kind']})",
        "",
        f"- pooled stages: {', '.join(obj['stages'])} (budget {obj['budget_seconds']:g} s)",
        f"- reference: {obj['reference']}",
        "- cells: " + ", ".join(f"{c['host']}/seed{c['seed']}" for c in obj["cells"]),
        f"- frozen sha256: `{obj['frozen_sha256']}`",
        f"- frozen at: {freeze.get('frozen_at', '-')} ({freeze.get('kind', '-')})",
        f"- post hoc: {'YES: results existed when it was frozen' if freeze.get('post_hoc') else 'no'}",
        "",
        "## Rules",
        "",
    ]
    for rule in obj.get("rules", []):
        why = f": {rule['reason']}" if rule.get("reason") else ""
        lines.append(f"- `{rule['description']}`{why}")
    lines += ["", "## Freeze and amendment history", ""]
    for a in obj.get("amendments", []) or [{"kind": "none", "frozen_at": "", "sha256": ""}]:
        reason = f", reason: {a.get('reason')}" if a.get("reason") else ""
        hoc = ", post hoc" if a.get("post_hoc") else ""
        lines.append(f"- {a['kind']} {a['frozen_at']} `{str(a['sha256'])[:16]}`{hoc}{reason}")
    if obj.get("manual"):
        lines += ["", "## Decisions taken outside the tool (manual)", ""]
        for m in obj["manual"]:
            state = f"withdrawn {m['withdrawn_at']}" if m.get("withdrawn_at") else "active"
            lines.append(f"- MANUAL ({state}): {', '.join(m['promoted'])}: {m['reason']}")
    lines += [
        "",
        "## Conditions",
        "",
        "| condition | label | role | n | mean val_bpb | sd | mean rank | best | worst | first | "
        "gap from best | mean gap to ref | max gap to ref | params_M | tokens_M | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in obj["conditions"]:
        lines.append(
            f"| {r['condition_id']} | {r['label']} | {r['role']} | {r['n_cells']} | "
            f"{_f(r['mean_val_bpb'])} | {_f(r['sd_val_bpb'])} | {_f(r['mean_rank'], 2)} | "
            f"{_f(r['best_rank'])} | {_f(r['worst_rank'])} | {_f(r['first_rank_cells'])} | "
            f"{_f(r['gap_from_best'])} | {_f(r['mean_gap_to_reference'])} | "
            f"{_f(r['max_gap_to_reference'])} | {_f(r['params_M'])} | {_f(r['tokens_M'])} | "
            f"**{r['verdict']}** |"
        )
    lines += ["", "## Verdicts and reasons", ""]
    for r in obj["conditions"]:
        lines.append(f"- **{r['label']}** ({r['condition_id']}): {r['verdict']}")
        lines += [f"  - {reason}" for reason in r["reasons"]]
    lines += ["", f"Promoted: {', '.join(obj['promoted']) or 'none'}", ""]
    lines += confidence_markdown(obj)
    if obj["incomplete"]:
        lines += ["## Incomplete", ""]
        for inc in obj["incomplete"]:
            cells = ", ".join(f"{c['host']}/seed{c['seed']}" for c in inc["missing"])
            lines.append(f"- {inc['condition_id']}: missing {cells}")
        lines.append("")
    agreement = obj.get("agreement") or {}
    lines += [
        "## Rank agreement",
        "",
        f"- Kendall's W over cells: {_f(agreement.get('kendalls_w'), 4)}",
    ]
    for p in agreement.get("hosts", []):
        lines.append(
            f"- {p['host_a']} vs {p['host_b']}: Kendall tau {_f(p['kendall_tau'], 4)}, "
            f"Spearman rho {_f(p['spearman_rho'], 4)}"
        )
    st = obj.get("stability") or {}
    if st.get("cells_left_out"):
        lines += [
            "",
            "## Leave-one-cell-out stability",
            "",
            f"The promoted set changes in {st['changed']} of {st['cells_left_out']} leave-one-out "
            "recomputations.",
        ]
    if obj.get("published_comparison"):
        lines += ["", "## Precision note (against the published summary)", ""]
        for d in obj["published_comparison"]:
            lines.append(
                f"- {d['label']} {d['column']}: recomputed {d['recomputed']!r}, published "
                f"{d['published']} ({d['table']}); the published cells are rounded to six "
                "decimals before pooling, so the last printed digit can differ"
            )
    if obj.get("flagged_runs"):
        lines += [
            "",
            "## Flagged runs (ranked all the same: read their numbers with care)",
            "",
        ]
        for r in obj["flagged_runs"]:
            lines.append(f"- {r['run']}: {', '.join(r['flags'])}: {'; '.join(r['notes'])}")
    lines += [
        "",
        "Numbers are unrounded in the JSON and CSV records; this page shows six decimals.",
        "",
    ]
    return "\n".join(lines)


def write_records(folder: Path, obj: Mapping[str, Any]) -> tuple[Path, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    gate = obj["gate"]
    out = []
    for suffix, text in (
        ("json", gate_json(obj)),
        ("csv", gate_csv(obj)),
        ("md", gate_markdown(obj)),
    ):
        path = safe_join(folder, f"{gate}.{suffix}")  # the gate id is a file name
        tmp = path.with_suffix(f".{suffix}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        out.append(path)
    return tuple(out)
