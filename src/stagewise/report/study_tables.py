"""The study-wide tables: summary, candidate matrix, plan, and the published summary tables."""

from __future__ import annotations

from stagewise.analysis.published import (
    GATE_RECORDS,
    NOTES,
    RECORD_KINDS,
    RECORDED_HOURS,
    published_notes,
)
from stagewise.budget_units import round_hours
from stagewise.report.context import ReportContext
from stagewise.report.published import PUBLISHED_LABEL, PublishedTable
from stagewise.report.stage_status import CELLS, PUBLISHED_ONLY, by_stage, stage_statuses
from stagewise.report.table_model import RUNS_SOURCE, STUDY_SOURCES, Row, Table


def summary_table(ctx: ReportContext) -> Table:
    study = ctx.study
    statuses = stage_statuses(ctx)
    rows: list[Row] = [
        {"item": "study", "value": study.name},
        {"item": "description", "value": str(study.raw.get("study", {}).get("description", ""))},
        {"item": "reference", "value": f"{ctx.label(study.reference)} ({study.reference})"},
        {"item": "metric", "value": f"{study.metric} (lower is better)"},
        {"item": "conditions", "value": len(study.conditions)},
        {"item": "host blocks", "value": ", ".join(study.hosts)},
        {"item": "stages", "value": len(study.stages)},
        {"item": "gates", "value": len(study.gates)},
        {"item": "runs succeeded", "value": sum(s.count("succeeded") for s in ctx.stage_runs)},
        {"item": "runs failed", "value": sum(s.count("failed") for s in ctx.stage_runs)},
        {
            "item": "planned runs without a result",
            "value": sum(s.pending for s in statuses if s.state != PUBLISHED_ONLY),
        },
        {
            "item": "runs known from a published summary only",
            "value": sum(s.pending for s in statuses if s.state == PUBLISHED_ONLY),
        },
        *(Row(item=f"stage {s.stage}", value=s.words().split(": ", 1)[1]) for s in statuses),
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
        row: Row = {
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
    rows: list[Row] = []
    for sp in ctx.plan.stages:
        stage = sp.stage
        rows.append(
            {
                "stage": stage.stage_id,
                "budget": str(stage.budget),
                "budget_seconds": stage.budget_seconds,
                "seeds": list(stage.seeds),
                "hosts": list(stage.hosts),
                "candidate_source": stage.candidates.describe(),
                "status": sp.status,
                "candidates": list(sp.candidates) if sp.candidates is not None else "pending",
                "candidate_count": sp.candidate_count,
                "manual_decision": sp.decision.manual if sp.decision else None,
                "runs": len(sp.runs) if sp.known else None,
                "budgeted_gpu_hours": round_hours(sp.budgeted_gpu_hours),
            }
        )
    total = ctx.plan.total_shown
    return Table(
        "plan",
        "Plan: budgets, seeds, hosts and runs per stage",
        list(rows[0]) if rows else ["stage"],
        rows,
        note=f"total budgeted {ctx.hours_unit}: "
        f"{total if total is not None else 'not known yet'} (candidates x seeds x hosts x budget)"
        + "".join(
            f"; {sp.stage.stage_id}: {text}"
            for sp in ctx.plan.stages
            for text in published_notes(ctx.published, f"seed:{sp.stage.stage_id}")
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
