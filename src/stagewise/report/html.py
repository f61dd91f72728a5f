"""`stagewise report`: one self-contained HTML file, plus every table as CSV/JSON and every figure.

The page reads like the paper: the outcome first (what the last decided gate did, by which
frozen rule, the GPU-hours against the continue-all counterfactuals, what is pending, and the
promotion funnel), then one section per gate (rule, verdicts and reasons, its host-seed cell
figure, sensitivity grid, confidence and tables), then the study-wide figures with the sections
they belong to (across gates, learning curves, budget), and the study's setup and records last.

The HTML embeds its figures as base64 PNG, carries its CSS inline, loads nothing from the
network and runs no script. All text goes through `html.escape`. A study that is half done
renders what exists and lists what is pending. Each section is one small function, so a new
section is one line in `render_html`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stagewise.analysis.published import GATE_RECORDS, RECORD_KINDS
from stagewise.backtest.report import backtest_sections
from stagewise.html_parts import e
from stagewise.ledger import Ledger
from stagewise.paths import safe_join
from stagewise.report.context import ReportContext, report_context
from stagewise.report.figures import RenderedFigure, render_figures
from stagewise.report.gate_sections import section_gates
from stagewise.report.html_blocks import (
    CSS,
    KEY_PLAN_COLUMNS,
    figures_in,
    render_figure,
    render_table,
    skipped_figure,
)
from stagewise.report.loss_curves import load_curves
from stagewise.report.outcome_section import pending_items, section_outcome
from stagewise.report.stage_status import stage_statuses
from stagewise.report.tables import Table, all_tables
from stagewise.snapshot import StudySnapshot
from stagewise.study import load_study

# --------------------------------------------------------------------------- study-wide sections


def section_across(tables: dict[str, Table], figures: Sequence[RenderedFigure]) -> str:
    figs = figures_in(figures, "across") + [
        f for n in ("gap_trajectory", "cost_quality") if (f := skipped_figure(figures, n))
    ]
    agreement = tables.get("agreement")
    return "".join(render_figure(f) for f in figs) + (
        render_table(agreement)
        if agreement
        else "<p><span class='badge pending'>pending</span> no gate analysis yet</p>"
    )


def section_curves(ctx: ReportContext, figures: Sequence[RenderedFigure]) -> str:
    figs = figures_in(figures, "curves")
    out = "".join(render_figure(f) for f in figs)
    skipped = skipped_figure(figures, "learning_curves")
    if skipped is not None:
        out += f"<p class='note'>No learning curve: {e(skipped.skipped or '')}.</p>"
    _, missing = load_curves(ctx)
    if missing:
        table = Table(
            "runs_without_curves",
            "Runs without a loss curve",
            ["stage", "label", "condition_id", "seed", "host", "source", "why"],
            [m.row() for m in missing],
        )
        by_stage: dict[str, int] = {}
        for m in missing:
            by_stage[m.stage] = by_stage.get(m.stage, 0) + 1
        out += (
            "<p>Runs without a loss curve (imported results carry none): "
            + e(", ".join(f"{s}: {n}" for s, n in by_stage.items()))
            + ".</p>"
            + render_table(table, caption=False, folded=len(missing) > 6).replace(
                "tables/runs_without_curves.csv, tables/runs_without_curves.json",
                "(listed here only)",
            )
        )
    return out


def section_budget(tables: list[Table], figures: Sequence[RenderedFigure]) -> str:
    budget = [t for t in tables if t.name.startswith("budget")]
    figs = figures_in(figures, "budget") + [f for f in [skipped_figure(figures, "budget")] if f]
    # The time split's columns follow folded: the key ones fit an 800 px page.
    keys: tuple[str, ...] = (
        "stage",
        "candidates",
        "seeds",
        "hosts",
        "budget_hours",
        "budgeted_gpu_hours",
    )
    keys += ("recorded_gpu_hours", "eval_hours")
    return "".join(render_figure(f) for f in figs) + (
        "".join(render_table(t, key_columns=keys if t.name == "budget" else None) for t in budget)
        if budget
        else "<p><span class='badge pending'>pending</span> budget accounting not available; "
        "the plan gives the budgeted hours</p>"
    )


def section_pending(ctx: ReportContext) -> str:
    pend = pending_items(ctx)
    statuses = stage_statuses(ctx)
    stages = (
        "<p>Each stage's results:</p><ul>"
        + "".join(f"<li>{e(s.words())}</li>" for s in statuses)
        + "</ul>"
    )
    if not pend:
        return "<p>Nothing is pending: every gate has its decision.</p>" + stages
    return "<ul class='pending'>" + "".join(f"<li>{e(p)}</li>" for p in pend) + "</ul>" + stages


def section_setup(by_name: dict[str, Table]) -> str:
    return (
        render_table(by_name["summary"])
        + render_table(by_name["matrix"])
        + render_table(by_name["plan"], key_columns=KEY_PLAN_COLUMNS)
    )


def section_records(by_name: dict[str, Table]) -> str:
    outside = by_name.get(f"published_{GATE_RECORDS}")
    return (
        render_table(by_name["freezes"])
        + ("<div class='pub'>" + render_table(outside) + "</div>" if outside is not None else "")
        + render_table(by_name["decisions"])
    )


def section_published(ctx: ReportContext, tables: list[Table]) -> str:
    records = {f"published_{name}" for name in RECORD_KINDS}
    pubs = [t for t in tables if t.published and t.name not in records]
    if not pubs:
        return "<p>This study ships no published summaries.</p>"
    return (
        "<p>These tables are shown as printed; no number in them was recomputed here. Where the "
        "cells behind one are in this study, the gate's own table recomputes it (and says where "
        "the printed digits differ); the note under each table says which.</p>"
        + "".join(f"<div class='pub'>{render_table(t)}</div>" for t in pubs)
    )


def section_flagged(ctx: ReportContext, table: Table) -> str:
    """Succeeded runs whose numbers cannot mean much: ranked like the others, shown here."""
    if not table.rows:
        return (
            f"<p>No run was flagged: every succeeded run that reported its steps trained at "
            f"least min_steps = {ctx.study.min_steps} optimizer steps, within 10% of its "
            "budget, and evaluated for less time than it trained.</p>"
        )
    return f"<p class='note'>{e(table.note)}</p>" + render_table(table, caption=False)


def render_html(ctx: ReportContext, tables: list[Table], figures: list[RenderedFigure]) -> str:
    by_name = {t.name: t for t in tables}
    study = ctx.study
    sections: list[tuple[str, str, str]] = [  # id, title, body
        ("outcome", "Outcome", section_outcome(ctx, figures)),
        (
            "gates",
            "Gates: rules, verdicts, cells and sensitivity",
            section_gates(ctx, by_name, figures),
        ),
        (
            "across",
            "Across gates: gap trajectory, cost and quality, agreement",
            section_across(by_name, figures),
        ),
        ("curves", "Learning curves", section_curves(ctx, figures)),
        ("budget", "Budget", section_budget(tables, figures)),
        *backtest_sections(study.root),  # only when the study holds a back-test result
        ("pending", "What is pending", section_pending(ctx)),
        ("setup", "Study setup: summary, matrix and plan", section_setup(by_name)),
        ("records", "Frozen rules and decisions", section_records(by_name)),
        ("flagged", "Flagged runs", section_flagged(ctx, by_name["flagged_runs"])),
        ("runs", "Failed runs", render_table(by_name["failed_runs"], caption=False)),
        (
            "published",
            "Published summaries (not recomputed)",
            section_published(ctx, tables),
        ),
    ]
    toc = (
        "<nav><ul>"
        + "".join(f"<li><a href='#{e(i)}'>{e(t)}</a></li>" for i, t, _ in sections)
        + "</ul></nav>"
    )
    body = "".join(
        f"<section id='{e(i)}'><h2>{e(t)}</h2>{b}</section>" + (toc if i == "outcome" else "")
        for i, t, b in sections
    )
    desc = str(study.raw.get("study", {}).get("description", ""))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>stagewise report: {e(study.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>stagewise report: {e(study.name)}</h1>"
        f"<p class='note'>{e(desc)}{' · ' if desc else ''}reference {e(ctx.label(study.reference))}; "
        f"metric {e(study.metric)} (lower is better). Every table is also in tables/ and every "
        "figure's numbers in figures/, as CSV and JSON.</p>"
        f"{body}</body></html>\n"
    )


@dataclass
class ReportResult:
    html: Path
    tables: list[Table]
    figures: list[RenderedFigure]


def build(ctx: ReportContext, out: Path) -> ReportResult:
    out.mkdir(parents=True, exist_ok=True)
    tables = all_tables(ctx)
    for table in tables:
        table.write(out / "tables")
    figures = render_figures(ctx, out / "figures")
    page = out / "report.html"
    page.write_text(render_html(ctx, tables, figures), encoding="utf-8")
    return ReportResult(page, tables, figures)


def write_report(folder: Path, out: Path | None = None) -> ReportResult:
    """Render the report of the study in `folder` into `out` (default: folder/report)."""
    study = load_study(folder)
    with Ledger.open(study.root, create=False) as ledger:
        ctx = report_context(StudySnapshot.read_intact(study, ledger))
    # The default folder is the study's own: refused if `report` leads outside it (a link).
    return build(ctx, out if out is not None else safe_join(study.root, "report"))
