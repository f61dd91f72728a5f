"""Applying a frozen gate: the decision, its JSON object and its records in `decisions/`.

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
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.analysis.cells import ResultLike
from stagewise.errors import DecisionError
from stagewise.examples.published import compare_with_published
from stagewise.gates.evaluate import Evaluation, describe_rule, evaluate_gate
from stagewise.gates.freeze import amendment_history, parse, require_frozen
from stagewise.ledger import DecisionRecord, FreezeRecord, Ledger
from stagewise.paths import safe_join
from stagewise.plan import build_plan
from stagewise.study.model import Study

DECISIONS_DIR = "decisions"

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


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def condition_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """One dict per pooled condition: complete ones by mean then id, then the incomplete."""
    labels = {c.condition_id: c for c in ev.study.conditions}

    def order(cid: str) -> tuple[int, float, str]:
        s = ev.stats.conditions[cid]
        return (0 if s.complete else 1, s.mean_val_bpb if s.mean_val_bpb is not None else 0.0, cid)

    rows = []
    for cid in sorted(ev.pool.conditions, key=order):
        s = ev.stats.conditions[cid]
        cond = labels.get(cid)
        rows.append(
            {
                "condition_id": cid,
                "label": cond.label if cond else cid,
                "role": cond.role if cond else "",
                "n_cells": s.n_cells,
                "mean_val_bpb": _num(s.mean_val_bpb),
                "sd_val_bpb": _num(s.sd_val_bpb),
                "mean_rank": _num(s.mean_rank),
                "best_rank": s.best_rank,
                "worst_rank": s.worst_rank,
                "first_rank_cells": s.first_rank_cells,
                "gap_from_best": _num(s.gap_from_best),
                "mean_gap_to_reference": _num(s.mean_gap_to_reference),
                "max_gap_to_reference": _num(s.max_gap_to_reference),
                "params_M": _num(s.params_M),
                "tokens_M": _num(s.tokens_M),
                "training_hours": _num(s.training_hours),
                "verdict": ev.judgement.verdicts[cid],
                "reasons": list(ev.judgement.reasons[cid]),
            }
        )
    return rows


def gate_object(
    ev: Evaluation,
    *,
    freeze: FreezeRecord | None,
    amendments: list[dict[str, Any]] | None = None,
    manual: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The `stagewise gate --json` object (its first keys are the contract; the rest is extra)."""
    gate = ev.gate
    stage = ev.study.stages[gate.stages[0]]
    stability = list(ev.stability)
    changed = sum(1 for s in stability if s.changed)
    return {
        "gate": gate.gate_id,
        "kind": gate.kind,
        "frozen_sha256": freeze.sha256 if freeze else None,
        "stages": list(gate.stages),
        "budget_seconds": stage.budget_seconds,
        "reference": ev.study.reference,
        "cells": [c.to_dict() for c in ev.cells],
        "conditions": condition_rows(ev),
        "promoted": list(ev.promoted),
        "incomplete": [
            {"condition_id": cid, "missing": [c.to_dict() for c in cells]}
            for cid, cells in ev.pool.missing.items()
        ],
        # extras
        "rules": [
            {"rule": r.rule, "description": describe_rule(r), "reason": r.reason, **r.raw}
            for r in gate.rules
        ],
        "freeze": (
            {
                "sha256": freeze.sha256,
                "definition_sha256": parse(freeze).get("frozen_sha256"),
                "kind": freeze.kind,
                "frozen_at": freeze.frozen_at,
                "post_hoc": freeze.post_hoc,
                "results_at_freeze": len(freeze.results_at_freeze),
                "reason": freeze.reason,
            }
            if freeze
            else None
        ),
        "amendments": amendments or [],
        "manual": manual or [],
        "agreement": {
            "kendalls_w": _num(ev.kendalls_w),
            "hosts": [p.to_dict() for p in ev.host_pairs],
        },
        "stability": {
            "cells_left_out": len(stability),
            "changed": changed,
            "unchanged_fraction": (len(stability) - changed) / len(stability)
            if stability
            else None,
            "per_cell": [s.to_dict() for s in stability],
        },
    }


def _manual_history(ledger: Ledger, gate_id: str) -> list[dict[str, Any]]:
    return [
        {
            "promoted": list(d.promoted),
            "reason": d.reason,
            "source": d.source,
            "decided_at": d.decided_at,
            "withdrawn_at": d.withdrawn_at,
            "withdraw_reason": d.withdraw_reason,
        }
        for d in ledger.decisions(gate_id)
        if d.manual
    ]


def plan_candidates(study: Study, ledger: Ledger) -> dict[str, tuple[str, ...] | None]:
    plan = build_plan(study, ledger)
    return {sp.stage.stage_id: sp.candidates for sp in plan.stages}


def compute_gate(
    study: Study,
    gate_id: str,
    runs: Iterable[ResultLike],
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    freeze: FreezeRecord | None = None,
) -> dict[str, Any]:
    """The gate object computed read-only from run records (for reports and verification)."""
    ev = evaluate_gate(study, gate_id, list(runs), candidates)
    return gate_object(ev, freeze=freeze)


@dataclass(frozen=True)
class GateResult:
    evaluation: Evaluation
    decision: DecisionRecord
    freeze: FreezeRecord
    object: dict[str, Any]
    files: tuple[Path, ...]

    @property
    def promoted(self) -> tuple[str, ...]:
        return self.evaluation.promoted

    def to_dict(self) -> dict[str, Any]:
        return self.object


def apply_gate(study: Study, ledger: Ledger, gate_id: str) -> GateResult:
    """Apply a frozen gate, record the computed decision and write `decisions/<gate>.*`."""
    active = ledger.active_decision(gate_id)
    if active is not None and active.manual:
        raise DecisionError(
            f"gate {gate_id} holds a decision taken outside the tool ({active.reason}); "
            f"withdraw it first with `stagewise decide {study.root} {gate_id} --withdraw "
            f'--reason "..."`'
        )
    freeze = require_frozen(study, ledger, gate_id)
    ev = evaluate_gate(study, gate_id, ledger.runs(), plan_candidates(study, ledger))
    if not ev.pool.complete:
        missing = ", ".join(sorted(ev.pool.missing)) or "none planned"
        raise DecisionError(
            f"gate {gate_id} has no complete condition yet (a succeeded result in every cell of "
            f"{', '.join(ev.gate.stages)}); incomplete: {missing}"
        )
    obj = gate_object(
        ev,
        freeze=freeze,
        amendments=amendment_history(ledger, gate_id),
        manual=_manual_history(ledger, gate_id),
    )
    decision = ledger.record_decision(
        gate_id,
        "computed",
        ev.promoted,
        reason=f"{ev.gate.kind} gate applied to {len(ev.cells)} cells",
        source="stagewise gate",
        frozen_sha256=freeze.sha256,
        payload={
            "verdicts": ev.judgement.verdicts,
            "incomplete": sorted(ev.pool.missing),
            "cells": len(ev.cells),
        },
    )
    obj["decision"] = {"kind": decision.kind, "decided_at": decision.decided_at}
    obj["published_comparison"] = compare_with_published(
        study.root, list(ev.gate.stages), obj["conditions"]
    )
    files = write_records(study.root / DECISIONS_DIR, obj)
    return GateResult(ev, decision, freeze, obj, files)


# ---------------------------------------------------------------------- records on disk
def gate_json(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def gate_csv(obj: Mapping[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CONDITION_KEYS)
    for row in obj["conditions"]:
        writer.writerow(
            [
                "; ".join(row[k]) if k == "reasons" else ("" if row[k] is None else row[k])
                for k in CONDITION_KEYS
            ]
        )
    return buf.getvalue()


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
