"""The figures of the training itself: GPU-hours per stage (and what continuing every candidate
would have cost), and each stage's smoothed train loss per condition."""

from __future__ import annotations

from collections.abc import Mapping

from stagewise.budget_units import round_hours
from stagewise.gates.budget import counterfactual_json
from stagewise.ledger import RunKey
from stagewise.report.context import ReportContext
from stagewise.report.figure_base import (
    FigureData,
    as_number,
    budget_label,
    condition_style,
    figure_data,
    figure_table,
)
from stagewise.report.loss_curves import (
    LOSS_LOG,
    SMOOTH_BETA,
    LossCurve,
    load_curves,
    mean_band,
    smooth,
)
from stagewise.report.published import PUBLISHED_LABEL
from stagewise.report.table_model import Row

# --------------------------------------------------------------------------- budget

BUDGET_FIGURE_COLUMNS = (
    "panel",
    "label",
    "budgeted_gpu_hours",
    "recorded_gpu_hours",
    "executed_gpu_hours",
    "added_gpu_hours",
    "total_gpu_hours",
    "published",
)


@figure_data("budget")
def budget_data(ctx: ReportContext) -> list[FigureData] | str:
    """GPU-hours per stage (budget result, else the plan) and the counterfactuals."""
    budget = ctx.budget_result
    # (stage, budgeted, recorded) hours as `budget --json` (else `plan --json`) writes them.
    stages: list[tuple[str, float | None, float | None]] = (
        [
            (sb.stage, round_hours(sb.budgeted_gpu_hours), round_hours(sb.recorded_gpu_hours))
            for sb in budget.stages
        ]
        if budget is not None and budget.stages
        else [
            (sp.stage.stage_id, round_hours(sp.budgeted_gpu_hours), None) for sp in ctx.plan.stages
        ]
    )
    if not stages:
        return "no stages"
    rows: list[Row] = [
        {
            "panel": "stage",
            "label": stage,
            "budgeted_gpu_hours": as_number(budgeted),
            "recorded_gpu_hours": as_number(recorded),
            "published": False,
        }
        for stage, budgeted, recorded in stages
    ]
    counter: list[tuple[Mapping[str, object], bool]] = [
        (counterfactual_json(c), False) for c in (budget.counterfactuals if budget else ())
    ]
    if not counter:
        pub = next((p for p in ctx.published if p.kind == "budget"), None)
        if pub is not None:
            counter = [(dict(r), True) for r in pub.rows]
    for c, published in counter:
        total = as_number(c.get("confirmation_gpu_hours")) or 0.0
        added = as_number(c.get("added_vs_executed")) or 0.0
        rows.append(
            {
                "panel": "counterfactual",
                "label": str(c.get("scenario", "")),
                "executed_gpu_hours": total - added,
                "added_gpu_hours": added,
                "total_gpu_hours": total,
                "published": published,
            }
        )
    recorded = any(r.get("recorded_gpu_hours") for r in rows if r["panel"] == "stage")
    has_counter = any(r["panel"] == "counterfactual" for r in rows)
    published = any(r["published"] for r in rows)
    return [
        FigureData(
            "budget",
            "budget",
            "budget",
            "GPU-hours per stage: budgeted"
            + (" and recorded" if recorded else " (no run here recorded its training time)")
            + ("; continue-all counterfactuals" if has_counter else ""),
            "Budgeted GPU-hours per stage (candidates x seeds x hosts x budget)"
            + ("; recorded = summed training time of recorded runs" if recorded else "")
            + (
                "; the counterfactual bars: GPU-hours of the final confirmation if every "
                "candidate of a gate had continued (executed part + added part): accounting for "
                "continuations that were never run, not evidence that the candidates left out "
                "would have lost"
                if has_counter
                else ""
            )
            + (f"; counterfactuals: {PUBLISHED_LABEL}" if published else "")
            + ".",
            ("tables/budget.csv", "tables/budget_counterfactuals.csv", "tables/plan.csv"),
            figure_table("budget", "Budget figure data", BUDGET_FIGURE_COLUMNS, rows),
        )
    ]


# --------------------------------------------------------------------------- learning curves

# The x axes a stage's learning curves are drawn against, each a panel of the figure.
CURVE_AXES = ("training_seconds", "tokens")

CURVE_COLUMNS = (
    "stage",
    "axis",
    "condition_id",
    "label",
    "color",
    "linestyle",
    "cells",
    "point",
    "x",
    "mean_loss",
    "low_loss",
    "high_loss",
)


def learning_curve_rows(
    ctx: ReportContext, stage: str, curves: Mapping[RunKey, LossCurve]
) -> list[Row]:
    """Smoothed train loss per condition of one stage, mean over cells with a min-max band."""
    rows: list[Row] = []
    for axis in CURVE_AXES:
        for cid in ctx.study.condition_ids:
            cells = [
                c for k, c in sorted(curves.items()) if k.stage == stage and k.condition_id == cid
            ]
            if not cells:
                continue
            band = mean_band(
                [
                    (c.seconds if axis == "training_seconds" else c.tokens, smooth(c.loss))
                    for c in cells
                ]
            )
            style = condition_style(ctx, cid)
            for i, (x, mean, low, high) in enumerate(band):
                rows.append(
                    {
                        "stage": stage,
                        "axis": axis,
                        "condition_id": cid,
                        "label": ctx.label(cid),
                        "color": style["color"],
                        "linestyle": style["linestyle"],
                        "cells": len(cells),
                        "point": i,
                        "x": x,
                        "mean_loss": mean,
                        "low_loss": low,
                        "high_loss": high,
                    }
                )
    return rows


@figure_data("learning_curves")
def learning_curves_data(ctx: ReportContext) -> list[FigureData] | str:
    curves, _ = load_curves(ctx)
    out = []
    for stage in ctx.study.stages:
        rows = learning_curve_rows(ctx, stage, curves)
        if not rows:
            continue
        name = f"learning_curves_{stage}"
        cells = {n for r in rows if isinstance(n := r["cells"], int)}
        out.append(
            FigureData(
                name,
                "learning_curves",
                "curves",
                f"Stage {stage} ({budget_label(ctx, [stage])}): smoothed train loss",
                f"Train loss smoothed (EMA {SMOOTH_BETA:g}, bias-corrected) against training "
                "seconds and tokens; one line per condition"
                + (
                    ", the mean over its host-seed cells with a band from the lowest to the "
                    "highest cell"
                    if max(cells) > 1
                    else " (one cell each: no band)"
                )
                + "; the x range is the one every cell covers.",
                (f"runs/{stage}/*/*/out/{LOSS_LOG}",),
                figure_table(name, f"Learning curves of stage {stage}", CURVE_COLUMNS, rows),
            )
        )
    return out or "no run has a loss curve (train_loss.csv); imported runs carry none"
