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

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.backtest.report import backtest_sections
from stagewise.ledger import Ledger
from stagewise.report.context import GateView, ReportContext, collect
from stagewise.report.figure_base import as_dict, budget_label
from stagewise.report.figures import RenderedFigure, render_figures
from stagewise.report.loss_curves import load_curves
from stagewise.report.published import PUBLISHED_LABEL
from stagewise.report.tables import GATE_COLUMNS, Table, all_tables
from stagewise.study import load_study

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1240px;
padding:1em 1.5em;color:#1a1a1a;line-height:1.4;font-size:14px;overflow-wrap:anywhere}
h1{font-size:1.5em;margin:.2em 0}h2{border-bottom:2px solid #0072B2;padding-bottom:.2em;margin-top:2em}
h3{margin-top:1.8em;border-bottom:1px solid #ccc}h4{margin:1em 0 .3em}
table{border-collapse:collapse;margin:.5em 0 .3em;font-size:12px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top;overflow-wrap:normal}
th{background:#eef3f8}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr:nth-child(even) td{background:#fafafa}
.scroll{overflow-x:auto;max-width:100%}
details{margin:.3em 0 .8em}summary{cursor:pointer;color:#0072B2;font-size:12px}
.note{color:#555;font-size:12px;margin:.1em 0 .8em}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:11px;font-weight:600;margin-right:4px}
.pass,.promote{background:#d6f0e3;color:#00603d}.fail,.stop{background:#fbe0d2;color:#8a3500}
.pending{background:#fff4c2;color:#6b5800}.manual{background:#f3dcec;color:#7d2f66}
.posthoc{background:#fbe0d2;color:#8a3500}.published{background:#e0e0e0;color:#333}
.incomplete,.untested{background:#e8e8e8;color:#444}
.pub{border-left:4px solid #999;padding:.2em .8em;background:#f6f6f6;margin:.8em 0}
code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
figure{margin:1em 0;border:1px solid #ddd;padding:.5em;background:#fff;max-width:100%}
figure img{max-width:100%;height:auto;display:block}figcaption{font-size:12px;color:#444}
nav ul{columns:3;column-gap:2em;font-size:13px;margin:.3em 0}nav li{break-inside:avoid;overflow-wrap:anywhere}ul.pending li{color:#6b5800}
.outcome{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);
grid-template-areas:"lead fig" "more fig";grid-template-rows:auto 1fr;gap:0 1.5em;align-items:start}
.outcome .lead{grid-area:lead;font-size:16px;margin:.3em 0 .5em}
.outcome figure{grid-area:fig;margin:.3em 0}.outcome .more{grid-area:more;font-size:13px}
.outcome .more ul{padding-left:1.2em;margin:.2em 0}#outcome h2{margin-top:.6em}
@media (max-width:1000px){.outcome{grid-template-columns:minmax(0,1fr);
grid-template-areas:"lead" "fig" "more";grid-template-rows:auto}nav ul{columns:2}}
"""

KEY_GATE_COLUMNS = (
    "label",
    "verdict",
    "n_cells",
    "mean_val_bpb",
    "mean_rank",
    "first_rank_cells",
    "mean_gap_to_reference",
    "max_gap_to_reference",
)
KEY_SENSITIVITY_COLUMNS = (
    "label",
    "statistic",
    "observed",
    "declared_threshold",
    "declared_verdict",
    "smallest_passing_threshold",
)
KEY_PLAN_COLUMNS = ("stage", "budget", "seeds", "hosts", "candidate_count", "budgeted_gpu_hours")
CONFIDENCE_KEYS = ("interval", "p_verdict", "decisive")
FOLD_ROWS = 15  # longer tables start folded


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


def fmt_hours(value: Any) -> str:
    """GPU-hours at four significant digits (169.2, 432, 0.03159)."""
    return f"{float(value):.4g}" if isinstance(value, int | float) else "?"


BADGE_COLUMNS = ("verdict", "decision", "status", "declared_verdict")
BADGES = {"pass", "fail", "promote", "stop", "incomplete", "untested", "pending"}


def badge(text: str) -> str:
    return f"<span class='badge {e(text.split()[0] if text else '')}'>{e(text)}</span>"


def _grid(table: Table, shown: Sequence[str]) -> str:
    head = "".join(f"<th>{e(c)}</th>" for c in shown)
    body = []
    for row in table.rows:
        cells = []
        for col in shown:
            text, numeric = fmt_cell(row.get(col))
            if (col in BADGE_COLUMNS or col.startswith("at ")) and text in BADGES:
                cells.append(f"<td>{badge(text)}</td>")
            else:
                cells.append(f"<td{' class=num' if numeric else ''}>{e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>"
        + "".join(body)
        + "</tbody></table></div>"
    )


def render_table(
    table: Table | None,
    *,
    caption: bool = True,
    columns: Sequence[str] | None = None,
    key_columns: Sequence[str] | None = None,
    folded: bool | None = None,
) -> str:
    """A table as HTML: wide tables scroll inside their own box, never the page.

    `columns` picks (and orders) what is shown; with `key_columns` only those are shown open
    and the full table follows folded in <details>; `folded` (default: more than FOLD_ROWS
    rows) folds the whole table. The files under tables/ always keep every column.
    """
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
        keys = [c for c in (key_columns or []) if c in shown]
        fold = len(table.rows) > FOLD_ROWS if folded is None else folded
        if fold:
            parts.append(
                f"<details><summary>show the table ({len(table.rows)} rows)</summary>"
                + _grid(table, shown)
                + "</details>"
            )
        elif keys and len(keys) < len(shown):
            parts.append(_grid(table, keys))
            parts.append(
                f"<details><summary>all {len(shown)} columns</summary>"
                + _grid(table, shown)
                + "</details>"
            )
        else:
            parts.append(_grid(table, shown))
    files = f"tables/{table.name}.csv, tables/{table.name}.json"
    note = f"{table.note} · " if table.note else ""
    parts.append(f"<p class='note'>{e(note)}{e(files)}</p>")
    return "".join(parts)


def render_figure(fig: RenderedFigure | None) -> str:
    if fig is None:
        return ""
    if fig.png is None:
        return (
            f"<figure id='fig-{e(fig.name)}'><figcaption><b>{e(fig.title)}</b>: "
            f"<span class='badge pending'>not drawn</span> {e(fig.skipped or '')}</figcaption></figure>"
        )
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    return (
        f"<figure id='fig-{e(fig.name)}'><img alt='{e(fig.title)}' src='data:image/png;base64,{data}'>"
        f"<figcaption><b>{e(fig.title)}.</b> {e(fig.caption)} "
        f"<span class='note'>figures/{e(fig.name)}.png, .svg; drawn from "
        f"figures/{e(fig.name)}.csv, .json</span></figcaption></figure>"
    )


def figures_in(figures: Sequence[RenderedFigure], section: str) -> list[RenderedFigure]:
    return [f for f in figures if f.section == section]


def skipped_figure(figures: Sequence[RenderedFigure], name: str) -> RenderedFigure | None:
    return next((f for f in figures if f.name == name and f.png is None), None)


# --------------------------------------------------------------------------- outcome


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


def _names(labels: Sequence[str]) -> str:
    if not labels:
        return "none"
    if len(labels) == 1:
        return labels[0]
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _gate_budget(ctx: ReportContext, view: GateView) -> str:
    return budget_label(ctx, view.gate.stages)


def _rules_for(view: GateView, condition_id: str, role: str) -> list[str]:
    """The gate's rules that name this condition or its role (else the ones naming nobody)."""
    named = [r for r in view.gate.rules if condition_id in r.conditions or role in r.roles]
    rules = named or [r for r in view.gate.rules if not r.conditions and not r.roles]
    out = []
    for r in rules:
        params = ", ".join(f"{k} = {v}" for k, v in sorted(r.params.items()))
        out.append(f"{r.rule} ({params})" if params else r.rule)
    return out


@dataclass
class Outcome:
    """What the first screen says, in sentences (plain text; the HTML escapes it)."""

    lead: str
    stopped: list[str] = field(default_factory=list)  # "<label>: by <rule>"
    earlier: str = ""
    budget: str = ""
    pending: list[str] = field(default_factory=list)
    hashes: list[tuple[str, str]] = field(default_factory=list)  # (gate, sha256)
    chain: str = ""


def decided_gate(ctx: ReportContext) -> GateView | None:
    """The last gate (in study order) with an active decision."""
    decided = [v for v in ctx.gates if v.active is not None]
    return decided[-1] if decided else None


def outcome_lead(ctx: ReportContext, view: GateView | None) -> tuple[str, list[str]]:
    if view is None:
        analysed = [v.gate_id for v in ctx.gates if v.result is not None]
        return (
            "No gate has been decided yet"
            + (
                f"; the analysis of {_names(analysed)} is shown below from the recorded cells."
                if analysed
                else "."
            ),
            [],
        )
    gate = view.gate
    where = (
        f"gate {gate.gate_id} ({gate.kind}, {_gate_budget(ctx, view)}: {' + '.join(gate.stages)})"
    )
    result = as_dict(view.result)
    assert view.active is not None
    if view.active.manual or result is None:
        promoted = [ctx.label(c) for c in view.active.promoted]
        return (
            f"Last decided: {where} promoted {_names(promoted)} by a decision taken outside the "
            f"tool ({view.active.reason or 'no reason given'}).",
            [],
        )
    conds = result.get("conditions", [])
    good = [c for c in conds if c.get("verdict") in ("pass", "promote")]
    bad = [c for c in conds if c.get("verdict") in ("fail", "stop")]
    other = [c for c in conds if c not in good and c not in bad]
    yes, no = ("passed", "failed") if gate.kind == "confirm" else ("promoted", "stopped")
    freeze = view.current_freeze
    rule = f"its frozen rule (sha256 {freeze.sha256[:12]}…)" if freeze else "its rule (not frozen)"
    lead = (
        f"Last decided: {where} {yes} {_names([str(c.get('label')) for c in good])}"
        + (f" and {no} {_names([str(c.get('label')) for c in bad])}" if bad else "")
        + f" under {rule}"
        + (
            f"; {_names([str(c.get('label')) for c in other])} "
            f"{'was' if len(other) == 1 else 'were'} not decided (incomplete cells)"
            if other
            else ""
        )
        + "."
    )
    stopped = [
        f"{c.get('label')} {no}: "
        + "; ".join(_rules_for(view, c["condition_id"], c.get("role", "")))
        for c in bad
    ]
    return lead, stopped


def outcome_budget(ctx: ReportContext) -> str:
    budget = as_dict(ctx.budget)
    if not budget:
        total = ctx.plan_dict.get("total_budgeted_gpu_hours")
        return (
            f"GPU-hours: {fmt_hours(total)} budgeted by the plan so far; no budget accounting yet."
        )
    recorded = budget.get("total_recorded_gpu_hours")
    budgeted = budget.get("total_budgeted_gpu_hours")
    text = (
        f"GPU-hours: {fmt_hours(recorded)} recorded (training time of the recorded runs), "
        f"{fmt_hours(budgeted)} budgeted"
        if recorded
        else f"GPU-hours: {fmt_hours(budgeted)} budgeted "
        "(no training time recorded: the results were imported or are pending)"
    )
    if isinstance(budgeted, int | float) and budgeted < 1:
        # a CPU demo spends minutes: say it in minutes too
        minutes = [f"{60 * v:.3g}" for v in (recorded, budgeted) if isinstance(v, int | float)]
        text += f" (= {' and '.join(minutes)} minutes)"
    text += "."
    counter = budget.get("counterfactuals") or []
    executed = next((c for c in counter if c.get("gate") is None), None)
    alts = [c for c in counter if c.get("gate") is not None]
    if executed is not None and alts:
        stages = ", ".join(executed.get("through_stages") or [])
        text += (
            f" The final confirmation ({stages}) costs {fmt_hours(executed['confirmation_gpu_hours'])}"
            f" GPU-hours with {executed.get('candidates')} candidates; continuing all "
            + "; all ".join(
                f"{c.get('candidates')} of {c.get('gate')} would cost "
                f"{fmt_hours(c.get('confirmation_gpu_hours'))} (+{fmt_hours(c.get('added_vs_executed'))})"
                for c in alts
            )
            + "."
        )
    return text


def outcome(ctx: ReportContext) -> Outcome:
    view = decided_gate(ctx)
    lead, stopped = outcome_lead(ctx, view)
    earlier_text = ""
    if view is not None:
        before = ctx.gates[: ctx.gates.index(view)]
        counts = {s["stage"]: s["candidate_count"] for s in ctx.plan_dict["stages"]}
        decided = [(v, v.active) for v in before if v.active is not None]
        if decided:
            earlier_text = (
                "Earlier gates: "
                + "; ".join(
                    f"{v.gate_id} promoted {len(d.promoted)}"
                    + (
                        f" of {counts[v.gate.stages[-1]]}"
                        if counts.get(v.gate.stages[-1]) is not None
                        else ""
                    )
                    + (" (decided outside the tool)" if d.manual else "")
                    for v, d in decided
                )
                + "."
            )
    hashes = [(v.gate_id, v.current_freeze.sha256) for v in ctx.gates if v.current_freeze]
    chain = (
        f"Event chain intact ({len(ctx.events)} ledger events)."
        if not ctx.chain_problems
        else f"Event chain BROKEN: {'; '.join(ctx.chain_problems)}."
    )
    return Outcome(
        lead=lead,
        stopped=stopped,
        earlier=earlier_text,
        budget=outcome_budget(ctx),
        pending=pending_items(ctx),
        hashes=hashes,
        chain=chain,
    )


def section_outcome(ctx: ReportContext, figures: Sequence[RenderedFigure]) -> str:
    out = outcome(ctx)
    more = []
    if out.stopped:
        more.append("<li>" + "</li><li>".join(e(s) for s in out.stopped) + "</li>")
    if out.earlier:
        more.append(f"<li>{e(out.earlier)}</li>")
    more.append(f"<li>{e(out.budget)}</li>")
    if out.pending:
        shown = out.pending[:3]
        rest = len(out.pending) - len(shown)
        more.append(
            "<li>Pending: "
            + e("; ".join(shown))
            + (f" <a href='#pending'>and {rest} more</a>" if rest else "")
            + "</li>"
        )
    else:
        more.append(
            "<li>Pending: nothing; every stage has its results and every gate its decision.</li>"
        )
    frozen = (
        "Frozen rules: "
        + "; ".join(
            f"{e(g)} <span class='hash' title='{e(h)}'>{e(h[:16])}…</span>" for g, h in out.hashes
        )
        + ". "
        if out.hashes
        else "No rule frozen yet. "
    )
    funnel = next(iter(figures_in(figures, "outcome")), None) or skipped_figure(figures, "funnel")
    return (
        f"<div class='outcome'><p class='lead' id='outcome-sentence'>{e(out.lead)}</p>"
        + render_figure(funnel)
        + f"<div class='more'><ul>{''.join(more)}</ul>"
        f"<p class='note'>{frozen}{e(out.chain)}</p></div></div>"
    )


# --------------------------------------------------------------------------- gates


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


def gate_freeze(view: GateView) -> str:
    freeze = view.current_freeze
    if freeze is None:
        return (
            "<p><span class='badge pending'>not frozen</span> the rule has no freeze record yet</p>"
        )
    flags = "<span class='badge posthoc'>post hoc</span>" if freeze.post_hoc else ""
    amends = [f for f in view.freezes if f.kind == "amend"]
    out = (
        f"<p>Frozen {flags}sha256 <span class='hash'>{e(freeze.sha256)}</span> at {e(freeze.frozen_at)}"
        f"{' (post hoc: ' + str(len(freeze.results_at_freeze)) + ' results existed at freeze time)' if freeze.post_hoc else ''}"
        f"; {len(amends)} amendment(s).</p>"
    )
    if len(view.freezes) > 1:
        out += (
            "<p>Freeze and amendment history:</p><ol>"
            + "".join(
                f"<li>{e(f.kind)} {e(f.frozen_at)} <span class='hash'>{e(f.sha256)}</span>"
                f"{' post hoc' if f.post_hoc else ''}{' — ' + e(f.reason) if f.reason else ''}</li>"
                for f in view.freezes
            )
            + "</ol>"
        )
    return out


def gate_decisions(ctx: ReportContext, view: GateView) -> str:
    if not view.decisions:
        return ""
    items = []
    for d in view.decisions:
        kind = (
            "<span class='badge manual'>manual</span>"
            if d.manual
            else badge("pass").replace(">pass<", ">computed<")
        )
        state = (
            ""
            if d.active
            else f" <span class='badge incomplete'>withdrawn: {e(d.withdraw_reason or '')}</span>"
        )
        items.append(
            f"<li>{kind}{state} promoted <b>{e(', '.join(ctx.label(c) for c in d.promoted) or 'none')}</b>"
            f" — {e(d.reason or '')}{' (source: ' + e(d.source) + ')' if d.source else ''}"
            f" <span class='note'>{e(d.decided_at)}</span></li>"
        )
    return "<h4>Decision</h4><ul>" + "".join(items) + "</ul>"


def gate_verdicts(view: GateView) -> str:
    result = as_dict(view.result)
    if result is None:
        return ""
    conds = result.get("conditions", [])
    summary = " ".join(f"{badge(str(c.get('verdict')))}<b>{e(c.get('label'))}</b>" for c in conds)
    items = "".join(
        f"<li>{badge(str(c.get('verdict')))}<b>{e(c.get('label'))}</b> "
        f"<span class='note'>({e(c.get('condition_id'))})</span><ul>"
        + "".join(
            f"<li>{e(r if not isinstance(r, dict) else r.get('text', r))}</li>"
            for r in c.get("reasons", [])
        )
        + "</ul></li>"
        for c in conds
    )
    out = f"<p>{summary}</p><h4>Verdicts and reasons</h4><ul>{items}</ul>"
    if view.active is None or view.active.manual:
        out += (
            "<p class='note'>This analysis is computed from the recorded cells; "
            "no computed decision has been recorded for it yet.</p>"
        )
    return out


def _interval(value: Any) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return "[" + ", ".join(fmt_cell(float(v))[0] for v in value) + "]"
    return fmt_cell(value)[0]


CONFIDENCE_SHOWN = (
    "label",
    "verdict",
    "p_verdict",
    "decisive",
    "mean_gap_low",
    "mean_gap_high",
    "max_gap_low",
    "max_gap_high",
)


def gate_confidence(view: GateView, tables: dict[str, Table] | None = None) -> str:
    """Per-condition decision confidence, where the gate result carries it (issue 13)."""
    if view.result is None and view.published:
        return (
            "<p class='note'>Verdict confidence and variance components need host-seed cells; "
            "this gate has only a published summary, so they cannot be computed here.</p>"
        )
    table = (tables or {}).get(f"confidence_{view.gate_id}")
    if table is not None:
        return render_table(
            table, columns=list(CONFIDENCE_SHOWN), key_columns=list(CONFIDENCE_SHOWN)
        ) + render_table((tables or {}).get(f"variance_{view.gate_id}"))
    result = as_dict(view.result)
    conds = (result or {}).get("conditions", [])
    if not any(k in c for c in conds for k in CONFIDENCE_KEYS):
        return ""
    rows = []
    level = None
    for c in conds:
        interval = c.get("interval") if isinstance(c.get("interval"), dict) else {}
        level = interval.get("confidence", level)
        rows.append(
            {
                "label": c.get("label"),
                "verdict": c.get("verdict"),
                "p_verdict": c.get("p_verdict"),
                "decisive": c.get("decisive"),
                **{f"{k} interval": _interval(v) for k, v in interval.items() if k != "confidence"},
            }
        )
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    table = Table(
        f"confidence_{view.gate_id}",
        f"Gate {view.gate_id}: decision confidence"
        + (f" ({float(level):.0%} intervals)" if isinstance(level, int | float) else ""),
        columns,
        rows,
        note="p_verdict = share of resampled gates (hosts as blocks, seeds within hosts) giving "
        "the same verdict; from stagewise gate --json",
    )
    return render_table(table).replace(
        f"tables/confidence_{view.gate_id}.csv, tables/confidence_{view.gate_id}.json",
        f"tables/gate_{view.gate_id}.json (conditions)",
    )


def render_gate(
    ctx: ReportContext,
    view: GateView,
    tables: dict[str, Table],
    figures: Sequence[RenderedFigure] = (),
) -> str:
    gate = view.gate
    out = [
        f"<h3 id='gate-{e(gate.gate_id)}'>Gate {e(gate.gate_id)} "
        f"<span class='note'>({e(gate.kind)}, {e(_gate_budget(ctx, view))}; pools "
        f"{e(' + '.join(gate.stages))})</span></h3>"
    ]
    if gate.description:
        out.append(f"<p>{e(gate.description)}</p>")
    out.append(gate_verdicts(view))
    out.append(
        "<h4>Rule</h4><ul>" + "".join(f"<li>{_rule_text(r)}</li>" for r in gate.rules) + "</ul>"
    )
    out.append(gate_freeze(view))
    out.append(gate_decisions(ctx, view))
    out.extend(render_figure(f) for f in figures_in(figures, f"gate:{gate.gate_id}"))
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
        out.append(
            render_table(
                tables.get(f"gate_{gate.gate_id}"), columns=shown, key_columns=KEY_GATE_COLUMNS
            )
        )
    out.append(gate_confidence(view, tables))
    sens = tables.get(f"sensitivity_{gate.gate_id}")
    if sens is not None:
        drop = {"condition_id", "rule_description", "flip_threshold"}
        columns = [c for c in sens.columns if c not in drop]
        grid = [c for c in columns if c.startswith("at ")]
        out.append(
            render_table(sens, columns=columns, key_columns=[*KEY_SENSITIVITY_COLUMNS, *grid])
        )
    out.append(render_table(tables.get(f"cells_{gate.gate_id}"), folded=True))
    for pub in view.published:
        out.append(
            "<div class='pub'>" + render_table(tables.get(f"published_{pub.name}")) + "</div>"
        )
    if view.pending and view.active is not None and view.active.manual:
        out.append(f"<p class='note'>Decided outside the tool; {e('; '.join(view.pending))}.</p>")
    elif view.pending:
        out.append("<p>" + badge("pending") + " " + e("; ".join(view.pending)) + "</p>")
    return f"<section class='gate'>{''.join(out)}</section>"


def section_gates(
    ctx: ReportContext, tables: dict[str, Table], figures: Sequence[RenderedFigure]
) -> str:
    if not ctx.gates:
        return "<p>This study declares no gates.</p>"
    skipped = skipped_figure(figures, "host_seed_cells")
    return render_figure(skipped) + "".join(render_gate(ctx, v, tables, figures) for v in ctx.gates)


# --------------------------------------------------------------------------- study-wide


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
            missing,
        )
        by_stage: dict[str, int] = {}
        for m in missing:
            by_stage[m["stage"]] = by_stage.get(m["stage"], 0) + 1
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
    return "".join(render_figure(f) for f in figs) + (
        "".join(render_table(t) for t in budget)
        if budget
        else "<p><span class='badge pending'>pending</span> budget accounting not available; "
        "the plan gives budgeted GPU-hours</p>"
    )


def section_pending(ctx: ReportContext) -> str:
    pend = pending_items(ctx)
    if not pend:
        return (
            "<p>Nothing: every stage has its results (recorded, or as a published summary) "
            "and every gate its decision.</p>"
        )
    return "<ul class='pending'>" + "".join(f"<li>{e(p)}</li>" for p in pend) + "</ul>"


def section_setup(by_name: dict[str, Table]) -> str:
    return (
        render_table(by_name["summary"])
        + render_table(by_name["matrix"])
        + render_table(by_name["plan"], key_columns=KEY_PLAN_COLUMNS)
    )


def section_records(by_name: dict[str, Table]) -> str:
    return render_table(by_name["freezes"]) + render_table(by_name["decisions"])


def section_published(tables: list[Table]) -> str:
    pubs = [t for t in tables if t.published]
    if not pubs:
        return "<p>This study ships no published summaries.</p>"
    return (
        "<p>These tables are the published pooled summaries of stages whose cells were never "
        "released. They are shown as printed; no number in them was recomputed here.</p>"
        + "".join(f"<div class='pub'>{render_table(t)}</div>" for t in pubs)
    )


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
        ("runs", "Failed runs", render_table(by_name["failed_runs"], caption=False)),
        ("published", "Published summaries (not recomputed)", section_published(tables)),
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
        ledger.require_intact()  # a report of an altered ledger would launder it
        ctx = collect(study, ledger)
    return build(ctx, out if out is not None else study.root / "report")
