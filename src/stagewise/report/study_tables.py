"""The study-wide tables: summary, candidate matrix, plan, and the published summary tables."""

from __future__ import annotations

from typing import Any

from stagewise.analysis.published import (
    GATE_RECORDS,
    NOTES,
    RECORD_KINDS,
    RECORDED_HOURS,
    published_notes,
)
from stagewise.gates.budget import hours_unit
from stagewise.report.context import ReportContext
from stagewise.report.published import PUBLISHED_LABEL, PublishedTable
from stagewise.report.stage_status import CELLS, PUBLISHED_ONLY, by_stage, stage_statuses
from stagewise.report.table_model import RUNS_SOURCE, STUDY_SOURCES, Table


def summary_table(ctx: ReportContext) -> Table:
    study = ctx.study
    st = ctx.status
    runs = [s["runs"] for s in st["stages"]]
    statuses = stage_statuses(ctx)
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
        {
            "item": "planned runs without a result",
            "value": sum(s.pending for s in statuses if s.state != PUBLISHED_ONLY),
        },
        {
            "item": "runs known from a published summary only",
            "value": sum(s.pending for s in statuses if s.state == PUBLISHED_ONLY),
        },
        *({"item": f"stage {s.stage}", "value": s.words().split(": ", 1)[1]} for s in statuses),
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
        note=f"total budgeted {hours_unit(ctx.study, list(ctx.runs))}: "
        f"{total if total is not None else 'not known yet'} (candidates x seeds x hosts x budget)"
        + "".join(
            f"; {st['stage']}: {text}"
            for st in ctx.plan_dict["stages"]
            for text in published_notes(ctx.published, f"seed:{st['stage']}")
        ),
        sources=[*STUDY_SOURCES, "decisions/decisions.json"],
        command="stagewise plan STUDY --json",
    )


RECORD_TITLES = {
    GATE_RECORDS: "Gates written down outside the tool (the publication's own records)",
    RECORDED_HOURS: "Recorded GPU-hours as published",
    NOTES: "The publication's own notes, each shown where it applies",
}


def published_table(pub: PublishedTable, ctx: ReportContext | None = None) -> Table:
    if pub.kind in RECORD_KINDS:
        return Table(
            f"published_{pub.name}",
            RECORD_TITLES[pub.kind],
            list(pub.columns),
            [dict(r) for r in pub.rows],
            note=f"published record (not recomputed); copied from {pub.relpath}",
            sources=[f"study/{pub.relpath}"],
            published=True,
        )
    stages = list(pub.stages)
    if pub.gate and ctx is not None and pub.gate in ctx.study.gates:
        stages = list(ctx.study.gates[pub.gate].stages)  # a pooled table covers the whole gate
    where = (
        f"gate {pub.gate} ({'+'.join(stages)})"
        if pub.gate
        else ("+".join(stages) if stages else pub.kind)
    )
    note = f"{PUBLISHED_LABEL}; {where}; copied from {pub.relpath}"
    if ctx is not None and stages:
        status = by_stage(ctx)
        with_cells = [s for s in stages if s in status and status[s].state == CELLS]
        if with_cells and len(with_cells) == len(stages) and pub.gate:
            note += (
                f"; the cells behind it are recorded in this study and gate {pub.gate}'s "
                "table recomputes it"
            )
        elif with_cells:
            note += f"; cells recorded in this study for {', '.join(with_cells)}"
        else:
            note += "; the cells behind it are not in this study"
        for text in published_notes(ctx.published, f"published:{pub.name}"):
            note += f"; {text}"
    return Table(
        f"published_{pub.name}",
        f"{pub.name}: {PUBLISHED_LABEL}",
        list(pub.columns),
        [dict(r) for r in pub.rows],
        note=note,
        sources=[f"study/{pub.relpath}"],
        published=True,
    )
