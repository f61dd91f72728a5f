"""`stagewise report`: one self-contained HTML file, plus every table as CSV/JSON and every figure.

The HTML embeds its figures as base64 PNG, carries its CSS inline, loads nothing from the
network and runs no script. All text goes through `html.escape`. A study that is half done
renders what exists and lists what is pending.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.ledger import Ledger
from stagewise.report.context import GateView, ReportContext, collect
from stagewise.report.figures import RenderedFigure, render_figures
from stagewise.report.published import PUBLISHED_LABEL
from stagewise.report.tables import GATE_COLUMNS, Table, all_tables
from stagewise.study import load_study

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1.5em 2em;color:#1a1a1a;line-height:1.4;font-size:14px}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.5em}h4{margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafafa}
.scroll{overflow-x:auto;max-width:100%}
.note{color:#555;font-size:12px;margin:.1em 0 .8em}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:11px;font-weight:600;margin-right:4px}
.pass,.promote{background:#d6f0e3;color:#00603d}.fail,.stop{background:#fbe0d2;color:#8a3500}
.pending{background:#fff4c2;color:#6b5800}.manual{background:#f3dcec;color:#7d2f66}
.posthoc{background:#fbe0d2;color:#8a3500}.published{background:#e0e0e0;color:#333}
.incomplete,.untested{background:#e8e8e8;color:#444}
.pub{border-left:4px solid #999;padding:.2em .8em;background:#f6f6f6;margin:.8em 0}
code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
figure{margin:1em 0;border:1px solid #ddd;padding:.5em;background:#fff}
figure img{max-width:100%;height:auto}figcaption{font-size:12px;color:#444}
nav ul{columns:3;font-size:13px}ul.pending li{color:#6b5800}
"""


def e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt_cell(value: Any) -> tuple[str, bool]:
    """Display text of a cell and whether it is numeric (right-aligned)."""
    if value is None or value == "":
        return "", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-", True
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value)), True
        # Six decimals is the printed precision of val_bpb; trailing zeros say nothing.
        text = f"{value:.6f}".rstrip("0")
        return (text + "0" if text.endswith(".") else text), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, list | tuple):
        return "; ".join(fmt_cell(v)[0] for v in value), False
    return str(value), False


BADGE_COLUMNS = ("verdict", "decision", "status", "declared_verdict")
BADGES = {"pass", "fail", "promote", "stop", "incomplete", "untested", "pending"}


def render_table(
    table: Table | None, *, caption: bool = True, columns: list[str] | None = None
) -> str:
    """A table as HTML; `columns` picks (and orders) what is shown, the files keep them all."""
    if table is None:
        return ""
    shown = [c for c in (columns or table.columns) if c in table.columns]
    parts = []
    if caption:
        parts.append(f"<h4 id='t-{e(table.name)}'>{e(table.title)}</h4>")
    if table.published:
        parts.append(f"<p><span class='badge published'>{e(PUBLISHED_LABEL)}</span></p>")
    if not table.rows:
        parts.append("<p class='note'>(no rows)</p>")
    else:
        head = "".join(f"<th>{e(c)}</th>" for c in shown)
        body = []
        for row in table.rows:
            cells = []
            for col in shown:
                text, numeric = fmt_cell(row.get(col))
                if (col in BADGE_COLUMNS or col.startswith("at ")) and text in BADGES:
                    cells.append(
                        f"<td><span class='badge {e(text.split()[0])}'>{e(text)}</span></td>"
                    )
                else:
                    cells.append(f"<td{' class=num' if numeric else ''}>{e(text)}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(
            f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>"
            + "".join(body)
            + "</tbody></table></div>"
        )
    files = f"tables/{table.name}.csv, tables/{table.name}.json"
    note = f"{table.note} · " if table.note else ""
    parts.append(f"<p class='note'>{e(note)}{e(files)}</p>")
    return "".join(parts)


def _rule_text(rule: Any) -> str:
    params = ", ".join(f"{k} = {v}" for k, v in sorted(rule.params.items()))
    target = []
    if rule.conditions:
        target.append("conditions " + ", ".join(rule.conditions))
    if rule.roles:
        target.append("roles " + ", ".join(rule.roles))
    return (
        f"<code>{e(rule.rule)}</code>{e(' (' + params + ')') if params else ''}"
        f" — {e('; '.join(target) if target else 'all conditions')}"
        + (f"<br><span class='note'>reason: {e(rule.reason)}</span>" if rule.reason else "")
    )


def render_gate(ctx: ReportContext, view: GateView, tables: dict[str, Table]) -> str:
    gate = view.gate
    out = [
        f"<h3 id='gate-{e(gate.gate_id)}'>Gate {e(gate.gate_id)} "
        f"<span class='note'>({e(gate.kind)}; pools {e(', '.join(gate.stages))})</span></h3>"
    ]
    if gate.description:
        out.append(f"<p>{e(gate.description)}</p>")
    out.append(
        "<h4>Rule</h4><ul>" + "".join(f"<li>{_rule_text(r)}</li>" for r in gate.rules) + "</ul>"
    )
    freeze = view.current_freeze
    if freeze is None:
        out.append(
            "<p><span class='badge pending'>not frozen</span> the rule has no freeze record yet</p>"
        )
    else:
        flags = "<span class='badge posthoc'>post hoc</span>" if freeze.post_hoc else ""
        amends = [f for f in view.freezes if f.kind == "amend"]
        out.append(
            f"<p>Frozen {flags}sha256 <span class='hash'>{e(freeze.sha256)}</span> at {e(freeze.frozen_at)}"
            f"{' (post hoc: ' + str(len(freeze.results_at_freeze)) + ' results existed at freeze time)' if freeze.post_hoc else ''}"
            f"; {len(amends)} amendment(s).</p>"
        )
        if len(view.freezes) > 1:
            out.append(
                "<p>Freeze and amendment history:</p><ol>"
                + "".join(
                    f"<li>{e(f.kind)} {e(f.frozen_at)} <span class='hash'>{e(f.sha256)}</span>"
                    f"{' post hoc' if f.post_hoc else ''}{' — ' + e(f.reason) if f.reason else ''}</li>"
                    for f in view.freezes
                )
                + "</ol>"
            )
    # Decisions
    if view.decisions:
        items = []
        for d in view.decisions:
            badge = (
                "<span class='badge manual'>manual</span>"
                if d.manual
                else "<span class='badge pass'>computed</span>"
            )
            state = (
                ""
                if d.active
                else f" <span class='badge incomplete'>withdrawn: {e(d.withdraw_reason or '')}</span>"
            )
            items.append(
                f"<li>{badge}{state} promoted <b>{e(', '.join(ctx.label(c) for c in d.promoted) or 'none')}</b>"
                f" — {e(d.reason or '')}{' (source: ' + e(d.source) + ')' if d.source else ''}"
                f" <span class='note'>{e(d.decided_at)}</span></li>"
            )
        out.append("<h4>Decision</h4><ul>" + "".join(items) + "</ul>")
    # Analysis
    if view.result is not None:
        shown = [
            "label",
            "role",
            "verdict",
            *[
                c
                for c in GATE_COLUMNS
                if c not in ("condition_id", "label", "role", "verdict", "reasons")
            ],
        ]
        out.append(render_table(tables.get(f"gate_{gate.gate_id}"), columns=shown))
        out.append(
            "<h4>Verdicts and reasons</h4><ul>"
            + "".join(
                f"<li><span class='badge {e(c.get('verdict'))}'>{e(c.get('verdict'))}</span>"
                f"<b>{e(c.get('label'))}</b> <span class='note'>({e(c.get('condition_id'))})</span><ul>"
                + "".join(f"<li>{e(r)}</li>" for r in c.get("reasons", []))
                + "</ul></li>"
                for c in view.result.get("conditions", [])
            )
            + "</ul>"
        )
        if view.active is None or view.active.manual:
            out.append(
                "<p class='note'>This analysis is computed from the recorded cells; "
                "no computed decision has been recorded for it yet.</p>"
            )
    sens = tables.get(f"sensitivity_{gate.gate_id}")
    if sens is not None:
        drop = {"condition_id", "rule_description", "flip_threshold"}
        out.append(render_table(sens, columns=[c for c in sens.columns if c not in drop]))
    for pub in view.published:
        out.append(
            "<div class='pub'>" + render_table(tables.get(f"published_{pub.name}")) + "</div>"
        )
    if view.pending and view.active is not None and view.active.manual:
        out.append(f"<p class='note'>Decided outside the tool; {e('; '.join(view.pending))}.</p>")
    elif view.pending:
        out.append(
            "<p><span class='badge pending'>pending</span> " + e("; ".join(view.pending)) + "</p>"
        )
    return "".join(out)


def render_figure(fig: RenderedFigure) -> str:
    if fig.png is None:
        return (
            f"<figure id='fig-{e(fig.name)}'><figcaption><b>{e(fig.title)}</b>: "
            f"<span class='badge pending'>not drawn</span> {e(fig.skipped or '')}</figcaption></figure>"
        )
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    return (
        f"<figure id='fig-{e(fig.name)}'><img alt='{e(fig.title)}' src='data:image/png;base64,{data}'>"
        f"<figcaption><b>{e(fig.title)}.</b> {e(fig.caption)} "
        f"<span class='note'>figures/{e(fig.name)}.png, .svg</span></figcaption></figure>"
    )


def pending_items(ctx: ReportContext) -> list[str]:
    items = []
    published_stages = {s for p in ctx.published for s in p.stages}
    for p in ctx.published:
        if p.gate:  # a pooled gate summary covers every stage the gate pools
            published_stages.update(ctx.study.gates[p.gate].stages)
    for st in ctx.status["stages"]:
        runs = st["runs"]
        recorded = sum(v for k, v in runs.items() if k != "pending")
        if recorded == 0 and st["stage"] in published_stages:
            continue  # only a published summary exists; shown as such, nothing to wait for
        if st["planned_runs"] is None:
            items.append(f"stage {st['stage']}: candidates pending ({st['candidate_source']})")
        elif not st["complete"]:
            items.append(
                f"stage {st['stage']}: {runs['succeeded']}/{st['planned_runs']} runs succeeded"
                f" ({runs['pending']} pending, {runs['failed']} failed)"
            )
    for view in ctx.gates:
        if view.pending and not (view.active is not None and view.active.manual):
            items.append(f"gate {view.gate_id}: {'; '.join(view.pending)}")
    return items


def render_html(ctx: ReportContext, tables: list[Table], figures: list[RenderedFigure]) -> str:
    by_name = {t.name: t for t in tables}
    study = ctx.study
    sections: list[tuple[str, str, str]] = []  # id, title, body
    sections.append(("summary", "Study summary", render_table(by_name["summary"], caption=False)))
    pend = pending_items(ctx)
    sections.append(
        (
            "pending",
            "What is pending",
            "<ul class='pending'>" + "".join(f"<li>{e(p)}</li>" for p in pend) + "</ul>"
            if pend
            else "<p>Nothing: every stage has its results (recorded, or as a published summary) and every gate its decision.</p>",
        )
    )
    sections.append(("matrix", "Matrix", render_table(by_name["matrix"], caption=False)))
    sections.append(("plan", "Plan", render_table(by_name["plan"], caption=False)))
    sections.append(
        (
            "gates",
            "Gates: frozen rules, analyses and decisions",
            render_table(by_name["freezes"])
            + render_table(by_name["decisions"])
            + "".join(render_gate(ctx, v, by_name) for v in ctx.gates),
        )
    )
    agreement = by_name.get("agreement")
    sections.append(
        (
            "agreement",
            "Rank agreement",
            render_table(agreement, caption=False)
            if agreement
            else "<p><span class='badge pending'>pending</span> no gate analysis yet</p>",
        )
    )
    budget = [t for t in tables if t.name.startswith("budget")]
    sections.append(
        (
            "budget",
            "Budget",
            "".join(render_table(t) for t in budget)
            if budget
            else "<p><span class='badge pending'>pending</span> budget accounting not available; "
            "the plan above gives budgeted GPU-hours</p>",
        )
    )
    sections.append(("figures", "Figures", "".join(render_figure(f) for f in figures)))
    sections.append(("runs", "Failed runs", render_table(by_name["failed_runs"], caption=False)))
    pubs = [t for t in tables if t.published]
    sections.append(
        (
            "published",
            "Published summaries (not recomputed)",
            "<p>These tables are the published pooled summaries of stages whose cells were never "
            "released. They are shown as printed; no number in them was recomputed here.</p>"
            + "".join(f"<div class='pub'>{render_table(t)}</div>" for t in pubs)
            if pubs
            else "<p>This study ships no published summaries.</p>",
        )
    )
    toc = (
        "<nav><ul>"
        + "".join(f"<li><a href='#{e(i)}'>{e(t)}</a></li>" for i, t, _ in sections)
        + "</ul></nav>"
    )
    body = "".join(f"<section id='{e(i)}'><h2>{e(t)}</h2>{b}</section>" for i, t, b in sections)
    desc = str(study.raw.get("study", {}).get("description", ""))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>stagewise report: {e(study.name)}</title><style>{CSS}</style></head><body>"
        f"<h1>stagewise report: {e(study.name)}</h1><p>{e(desc)}</p>"
        f"<p class='note'>Reference {e(ctx.label(study.reference))}; metric {e(study.metric)} "
        f"(lower is better); {len(ctx.events)} ledger events, chain "
        f"{'intact' if not ctx.chain_problems else 'BROKEN'}. Every table is also in tables/ "
        "as CSV and JSON.</p>"
        f"{toc}{body}</body></html>\n"
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
    with Ledger.open(study.root) as ledger:
        ctx = collect(study, ledger)
    return build(ctx, out if out is not None else study.root / "report")
