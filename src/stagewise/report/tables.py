"""Every table of the report as plain rows (a list of dicts), with CSV and JSON writers.

A table knows its columns (in order), where its numbers come from (`sources`: files of the
audit bundle) and a note shown under it. Values stay unrounded; the HTML rounds for display.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.gates.decide import CONFIDENCE_COLUMNS as RECORD_CONFIDENCE_COLUMNS
from stagewise.gates.results import CONDITION_KEYS, GateResult
from stagewise.ledger.schema import SUMMARY_FIELDS
from stagewise.paths import safe_join
from stagewise.report.context import GateView, ReportContext
from stagewise.report.published import PUBLISHED_LABEL, PublishedTable
from stagewise.study.model import Gate, Study

# Run columns that carry no path, no user and no machine name; the others stay in the ledger.
RUN_COLUMNS = (
    "stage",
    "condition_id",
    "seed",
    "host",
    "status",
    "cause",
    "attempts",
    "source",
    "created_at",
    "started_at",
    "finished_at",
    *SUMMARY_FIELDS,
    "checkpoint_sha256",
)
GATE_COLUMNS = CONDITION_KEYS  # the gate table is the gate JSON's condition rows
RUNS_SOURCE = "results/runs.csv"
STUDY_SOURCES = ["study/study.toml", "study/matrix"]


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    columns: list[str]
    rows: list[dict[str, Any]]
    note: str = ""
    sources: list[str] = field(default_factory=list)
    command: str = ""
    published: bool = False

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({c: csv_value(row.get(c)) for c in self.columns})
        return buf.getvalue()

    def to_json(self) -> str:
        payload = {
            "table": self.name,
            "title": self.title,
            "note": self.note,
            "columns": self.columns,
            "rows": [{c: json_value(row.get(c)) for c in self.columns} for row in self.rows],
        }
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = safe_join(folder, f"{self.name}.csv")  # names hold gate ids
        json_path = safe_join(folder, f"{self.name}.json")
        csv_path.write_text(self.to_csv(), encoding="utf-8")
        json_path.write_text(self.to_json(), encoding="utf-8")
        return [csv_path, json_path]


def csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return "; ".join(csv_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def flatten(value: Any) -> Any:
    """Nested lists/dicts inside a row become one readable cell."""
    if isinstance(value, list | tuple) and all(not isinstance(v, dict | list) for v in value):
        return list(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


# --------------------------------------------------------------------------- study and plan


def summary_table(ctx: ReportContext) -> Table:
    study = ctx.study
    st = ctx.status
    runs = [s["runs"] for s in st["stages"]]
    rows: list[dict[str, Any]] = [
        {"item": "study", "value": study.name},
        {"item": "description", "value": str(study.raw.get("study", {}).get("description", ""))},
        {"item": "reference", "value": f"{ctx.label(study.reference)} ({study.reference})"},
        {"item": "metric", "value": f"{study.metric} (lower is better)"},
        {"item": "conditions", "value": len(study.conditions)},
        {"item": "host blocks", "value": ", ".join(study.hosts)},
        {"item": "stages", "value": len(study.stages)},
        {"item": "gates", "value": len(study.gates)},
        {"item": "runs succeeded", "value": sum(r["succeeded"] for r in runs)},
        {"item": "runs failed", "value": sum(r["failed"] for r in runs)},
        {"item": "planned runs without a result", "value": sum(r["pending"] for r in runs)},
        {"item": "ledger events", "value": len(ctx.events)},
        {
            "item": "event chain",
            "value": "intact" if not ctx.chain_problems else "; ".join(ctx.chain_problems),
        },
    ]
    return Table(
        "summary", "Study summary", ["item", "value"], rows, sources=[*STUDY_SOURCES, RUNS_SOURCE]
    )


def matrix_table(ctx: ReportContext) -> Table:
    params: list[str] = []
    for cond in ctx.study.conditions:
        for key in cond.params:
            if key not in params:
                params.append(key)
    rows = []
    for cond in ctx.study.conditions:
        row: dict[str, Any] = {
            "condition_id": cond.condition_id,
            "label": cond.label,
            "role": cond.role,
        }
        row.update({p: cond.params.get(p) for p in params})
        row["description"] = cond.description
        rows.append(row)
    return Table(
        "matrix",
        "Candidate matrix with roles",
        ["condition_id", "label", "role", *params, "description"],
        rows,
        note=f"reference: {ctx.study.reference}",
        sources=STUDY_SOURCES,
    )


def plan_table(ctx: ReportContext) -> Table:
    rows = []
    for st in ctx.plan_dict["stages"]:
        cands = st["candidates"]
        rows.append(
            {
                "stage": st["stage"],
                "budget": st["budget"],
                "budget_seconds": st["budget_seconds"],
                "seeds": st["seeds"],
                "hosts": st["hosts"],
                "candidate_source": st["candidate_source"],
                "status": st["status"],
                "candidates": cands if cands is not None else "pending",
                "candidate_count": st["candidate_count"],
                "manual_decision": st["decision_manual"],
                "runs": len(st["runs"]) if cands is not None else None,
                "budgeted_gpu_hours": st["budgeted_gpu_hours"],
            }
        )
    total = ctx.plan_dict["total_budgeted_gpu_hours"]
    return Table(
        "plan",
        "Plan: budgets, seeds, hosts and runs per stage",
        list(rows[0]) if rows else ["stage"],
        rows,
        note=f"total budgeted GPU-hours: {total} (candidates x seeds x hosts x budget)",
        sources=[*STUDY_SOURCES, "decisions/decisions.json"],
        command="stagewise plan STUDY --json",
    )


# --------------------------------------------------------------------------- gates


def freezes_table(ctx: ReportContext) -> Table:
    rows = []
    for view in ctx.gates:
        for rec in view.freezes:
            rows.append(
                {
                    "gate": rec.gate,
                    "record": rec.kind,
                    "sha256": rec.sha256,
                    "frozen_at": rec.frozen_at,
                    "post_hoc": rec.post_hoc,
                    "results_at_freeze": len(rec.results_at_freeze),
                    "reason": rec.reason or "",
                    "current": rec is view.freezes[-1],
                }
            )
    columns = ["gate", "record", "sha256", "frozen_at", "post_hoc", "results_at_freeze"]
    return Table(
        "freezes",
        "Frozen rules and amendments",
        [*columns, "reason", "current"],
        rows,
        note="sha256 of the canonical JSON of the gate and its stages' plan (frozen/<gate>.json)",
        sources=["frozen/"],
        command="stagewise freeze STUDY GATE",
    )


def decisions_table(ctx: ReportContext) -> Table:
    columns = (
        "gate",
        "kind",
        "manual",
        "promoted",
        "reason",
        "source",
        "frozen_sha256",
        "decided_at",
        "active",
        "withdraw_reason",
    )
    rows = []
    for view in ctx.gates:
        for rec in view.decisions:
            record = rec.as_dict()
            rows.append({c: "" if record[c] is None else record[c] for c in columns})
    return Table(
        "decisions",
        "Decisions with reasons",
        list(columns),
        rows,
        note="manual = taken outside the tool (a researcher's judgement or a published outcome)",
        sources=["decisions/decisions.json"],
        command="stagewise gate STUDY GATE / stagewise decide STUDY GATE",
    )


def gate_table(view: GateView) -> Table | None:
    return gate_table_of(view.gate, view.gate_result)


def gate_table_of(gate: Gate, gate_result: GateResult | None) -> Table | None:
    """The analysis table of one gate: the condition rows of its `stagewise gate --json`."""
    if gate_result is None:
        return None
    result = gate_result.to_json()
    rows = []
    for cond in result.get("conditions", []):
        row = {c: cond.get(c) for c in GATE_COLUMNS}
        row["reasons"] = [
            str(r) if not isinstance(r, dict) else flatten(r) for r in cond.get("reasons", [])
        ]
        rows.append(row)
    cells = result.get("cells", [])
    missing = result.get("incomplete", [])
    note = (
        f"{len(cells)} host-seed cells; promoted: {', '.join(result.get('promoted', [])) or 'none'}"
    )
    if missing:
        note += "; incomplete: " + ", ".join(
            f"{m.get('condition_id')} (missing {flatten(m.get('missing'))})" for m in missing
        )
    return Table(
        f"gate_{gate.gate_id}",
        f"Gate {gate.gate_id}: analysis of {' + '.join(gate.stages)} (recomputed from cells)",
        list(GATE_COLUMNS),
        rows,
        note=note,
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise gate STUDY {gate.gate_id} --json",
    )


CONFIDENCE_COLUMNS = ("condition_id", "label", "verdict", *RECORD_CONFIDENCE_COLUMNS)
VARIANCE_COLUMNS = (
    "scope",
    "sd_host",
    "df_host",
    "sd_seed",
    "df_seed",
    "var_host",
    "var_seed",
    "n_hosts",
    "n_cells",
)


def confidence_table_of(gate: Gate, gate_result: GateResult | None) -> Table | None:
    """Each condition's p_verdict, decisive and intervals (issue 13), where computed from cells."""
    if gate_result is None or gate_result.confidence is None:
        return None
    conf = gate_result.confidence
    result = gate_result.to_json()
    rows = []
    for cond in result.get("conditions", []):
        iv = cond.get("interval") or {}
        row = {c: cond.get(c) for c in ("condition_id", "label", "verdict", "p_verdict")}
        row["decisive"] = cond.get("decisive")
        for key in ("mean", "mean_gap", "max_gap"):
            pair = iv.get(key) or (None, None)
            row[f"{key}_low"], row[f"{key}_high"] = pair
        rows.append(row)
    level = conf["confidence"]
    note = (
        f"blocked bootstrap, host blocks resampled and seeds within hosts (seed {conf['seed']}); "
        f"p_verdict = share of {conf['verdict_replicates']} replicates, with every rule "
        f"re-applied, returning the observed verdict; decisive when >= {level:g}; "
        f"{level:.0%} percentile intervals; descriptive, not a significance test"
    )
    if conf.get("notes"):
        note += "; " + "; ".join(conf["notes"])
    return Table(
        f"confidence_{gate.gate_id}",
        f"Gate {gate.gate_id}: verdict confidence",
        list(CONFIDENCE_COLUMNS),
        rows,
        note=note,
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise gate STUDY {gate.gate_id} --json",
    )


def variance_table_of(gate: Gate, gate_result: GateResult | None) -> Table | None:
    """Condition-by-host and within-host (seed) components of the gaps to the reference."""
    if gate_result is None or gate_result.confidence is None:
        return None
    variance = gate_result.confidence.get("variance") or {}
    scoped = [("pooled", variance.get("pooled"))]
    scoped += list((variance.get("conditions") or {}).items())
    rows = [
        {"scope": scope, **{c: v.get(c) for c in VARIANCE_COLUMNS[1:]}} for scope, v in scoped if v
    ]
    if not rows:
        return None
    return Table(
        f"variance_{gate.gate_id}",
        f"Gate {gate.gate_id}: variance of the gaps to the reference",
        list(VARIANCE_COLUMNS),
        rows,
        note="random-effects components with hosts as blocks (method of moments): sd_host is "
        "the condition-by-host effect more seeds never average away, sd_seed the seed-to-seed "
        "scatter within a host; None where its degrees of freedom are 0",
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise gate STUDY {gate.gate_id} --json",
    )


def cells_table(ctx: ReportContext, view: GateView) -> Table | None:
    return cells_table_of(ctx.study, view.gate, view.cells)


def cells_table_of(study: Study, gate: Gate, cells: list[dict[str, Any]]) -> Table | None:
    if not cells:
        return None
    labels = {c.condition_id: c.label for c in study.conditions}
    rows = [{**c, "label": labels.get(c["condition_id"], c["condition_id"])} for c in cells]
    return Table(
        f"cells_{gate.gate_id}",
        f"Gate {gate.gate_id}: host-seed cell values",
        ["stage", "host", "seed", "condition_id", "label", "val_bpb"],
        rows,
        sources=[RUNS_SOURCE],
    )


def agreement_rows(gate_id: str, gate_result: GateResult) -> list[dict[str, Any]]:
    """Kendall's W, host-pair tau/rho and leave-one-cell-out stability of one gate."""
    result = gate_result.to_json()
    rows: list[dict[str, Any]] = []
    ag = result.get("agreement") or {}
    if "kendalls_w" in ag:
        rows.append(
            {
                "gate": gate_id,
                "measure": "Kendall's W over cells",
                "between": "all cells",
                "value": ag["kendalls_w"],
            }
        )
    for pair in ag.get("hosts", []):
        between = f"{pair.get('host_a')} vs {pair.get('host_b')} (mean ranks)"
        rows.append(
            {
                "gate": gate_id,
                "measure": "Kendall tau",
                "between": between,
                "value": pair.get("kendall_tau"),
            }
        )
        rows.append(
            {
                "gate": gate_id,
                "measure": "Spearman rho",
                "between": between,
                "value": pair.get("spearman_rho"),
            }
        )
    st = result.get("stability") or {}
    if st.get("cells_left_out"):
        rows.append(
            {
                "gate": gate_id,
                "measure": "leave-one-cell-out: promoted set unchanged (fraction)",
                "between": f"{st['cells_left_out'] - st.get('changed', 0)} of "
                f"{st['cells_left_out']} cells left out",
                "value": st.get("unchanged_fraction"),
            }
        )
    return rows


def agreement_table(ctx: ReportContext) -> Table | None:
    rows = []
    for view in ctx.gates:
        if view.gate_result is not None:
            rows.extend(agreement_rows(view.gate_id, view.gate_result))
    if not rows:
        return None
    return Table(
        "agreement",
        "Rank agreement and leave-one-cell-out stability",
        ["gate", "measure", "between", "value"],
        rows,
        note="Kendall's W over cells; Kendall tau / Spearman rho between hosts' mean rankings; "
        "null where a statistic does not exist (fewer than two conditions or hosts)",
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command="stagewise gate STUDY GATE --json",
    )


SENSITIVITY_COLUMNS = (
    "label",
    "condition_id",
    "rule_description",
    "statistic",
    "role",
    "observed",
    "declared_threshold",
    "declared_verdict",
    "smallest_passing_threshold",
    "flip_threshold",
    "note",
)


def sensitivity_table(view: GateView) -> Table | None:
    sens = view.sensitivity
    if not sens or not isinstance(sens.get("rows"), list) or not sens["rows"]:
        return None
    grid = [float(g) for g in sens.get("grid", [])]
    grid_cols = [f"at {g:g}" for g in grid]
    rows = []
    for raw in sens["rows"]:
        row = {c: raw.get(c) for c in SENSITIVITY_COLUMNS}
        for col, point in zip(grid_cols, raw.get("grid", []), strict=False):
            row[col] = point.get("verdict")
        rows.append(row)
    return Table(
        f"sensitivity_{view.gate_id}",
        f"Gate {view.gate_id}: threshold sensitivity",
        [*SENSITIVITY_COLUMNS, *grid_cols],
        rows,
        note="each threshold rule re-evaluated over the grid, for its declared statistic and its "
        "diagnostic twin; 'at t' = verdict with threshold t",
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise sensitivity STUDY {view.gate_id} --json",
    )


# --------------------------------------------------------------------------- budget and runs


BUDGET_COLUMNS = (
    "stage",
    "candidates",
    "seeds",
    "hosts",
    "budget_hours",
    "budgeted_gpu_hours",
    "recorded_gpu_hours",
    "runs_recorded",
)
COUNTERFACTUAL_COLUMNS = (
    "scenario",
    "gate",
    "candidates",
    "through_stages",
    "confirmation_gpu_hours",
    "added_vs_executed",
)


def budget_tables(ctx: ReportContext) -> list[Table]:
    budget = ctx.budget
    if not budget:
        return []
    sources = [*STUDY_SOURCES, RUNS_SOURCE, "decisions/decisions.json"]
    stages = Table(
        "budget",
        "Budget: budgeted and recorded GPU-hours per stage",
        list(BUDGET_COLUMNS),
        [{c: r.get(c) for c in BUDGET_COLUMNS} for r in budget.get("stages", [])],
        note=f"total budgeted GPU-hours: {budget.get('total_budgeted_gpu_hours')}; total "
        f"recorded: {budget.get('total_recorded_gpu_hours')} (sum of training time of recorded "
        "runs; none where the results carry no training time)",
        sources=sources,
        command="stagewise budget STUDY --json",
    )
    counter = Table(
        "budget_counterfactuals",
        "Budget counterfactuals: continue all candidates of a gate to the final confirmation",
        list(COUNTERFACTUAL_COLUMNS),
        [{c: r.get(c) for c in COUNTERFACTUAL_COLUMNS} for r in budget.get("counterfactuals", [])],
        note=f"final gate: {budget.get('final_gate')}; GPU-hours of its stages in each scenario",
        sources=sources,
        command="stagewise budget STUDY --json",
    )
    return [stages, counter] if counter.rows else [stages]


def run_row(rec: Any) -> dict[str, Any]:
    row = {c: getattr(rec, c) for c in RUN_COLUMNS}
    return row


def runs_table(ctx: ReportContext) -> Table:
    return Table(
        "runs",
        "Runs",
        list(RUN_COLUMNS),
        [run_row(r) for r in ctx.runs],
        note="paths, owners, logs and raw summaries stay in the ledger",
        sources=[RUNS_SOURCE],
    )


def failed_runs_table(ctx: ReportContext) -> Table:
    return failed_runs_table_of(ctx.runs)


def failed_runs_table_of(runs: Sequence[Any]) -> Table:
    rows = [
        {
            "stage": r.stage,
            "condition_id": r.condition_id,
            "seed": r.seed,
            "host": r.host,
            "status": r.status,
            "attempts": r.attempts,
            "cause": r.cause or "",
        }
        for r in runs
        if r.status in ("failed", "interrupted")
    ]
    return Table(
        "failed_runs",
        "Failed and interrupted runs with causes",
        ["stage", "condition_id", "seed", "host", "status", "attempts", "cause"],
        rows,
        sources=[RUNS_SOURCE],
    )


def published_table(pub: PublishedTable) -> Table:
    where = (
        f"gate {pub.gate} ({', '.join(pub.stages)})"
        if pub.gate
        else (", ".join(pub.stages) if pub.stages else pub.kind)
    )
    return Table(
        f"published_{pub.name}",
        f"{pub.name}: {PUBLISHED_LABEL}",
        list(pub.columns),
        [dict(r) for r in pub.rows],
        note=f"{PUBLISHED_LABEL}; {where}; copied from {pub.relpath}",
        sources=[f"study/{pub.relpath}"],
        published=True,
    )


def all_tables(ctx: ReportContext) -> list[Table]:
    """Every table in report order; tables without data are left out (the HTML says why)."""
    tables = [summary_table(ctx), matrix_table(ctx), plan_table(ctx), freezes_table(ctx)]
    tables.append(decisions_table(ctx))
    for view in ctx.gates:
        for maybe in (
            gate_table(view),
            confidence_table_of(view.gate, view.gate_result),
            variance_table_of(view.gate, view.gate_result),
            cells_table(ctx, view),
            sensitivity_table(view),
        ):
            if maybe is not None:
                tables.append(maybe)
    agreement = agreement_table(ctx)
    if agreement is not None:
        tables.append(agreement)
    tables.extend(budget_tables(ctx))
    tables.append(runs_table(ctx))
    tables.append(failed_runs_table(ctx))
    tables.extend(published_table(p) for p in ctx.published)
    return tables
