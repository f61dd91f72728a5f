"""One report section per gate: its frozen rule, decisions, verdicts with reasons, verdict
confidence, host-seed figure, sensitivity and tables."""

from __future__ import annotations

from collections.abc import Sequence

from stagewise.analysis.published import (
    GATE_RECORDS,
    PUBLISHED_DIR,
    OutsideFreeze,
    compare_with_published,
    outside_freezes,
    published_notes,
)
from stagewise.gates.freeze import recipes_summary
from stagewise.html_parts import e
from stagewise.ledger import DecisionRecord
from stagewise.report.context import GateView, ReportContext
from stagewise.report.figures import RenderedFigure
from stagewise.report.html_blocks import (
    KEY_GATE_COLUMNS,
    KEY_SENSITIVITY_COLUMNS,
    badge,
    figures_in,
    fmt_param,
    render_figure,
    render_table,
    skipped_figure,
)
from stagewise.report.outcome_section import gate_budget
from stagewise.report.stage_status import gate_results_words
from stagewise.report.tables import GATE_COLUMNS, Table
from stagewise.study.model import Rule
from stagewise.words import plural

GATE_RECORDS_FILE = f"{PUBLISHED_DIR}/{GATE_RECORDS}.csv"


def _rule_text(rule: Rule) -> str:
    params = ", ".join(f"{k} = {fmt_param(k, v)}" for k, v in sorted(rule.params.items()))
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


def gate_freeze(view: GateView, outside: OutsideFreeze | None = None) -> str:
    freeze = view.current_freeze
    if freeze is None and outside is not None:
        return (
            "<p><span class='badge outside'>frozen outside stagewise</span> "
            f"{e(outside.words())}. Source: {e(GATE_RECORDS_FILE)}; stagewise holds no freeze "
            "record (no sha256) of it.</p>"
        )
    if freeze is None:
        return (
            "<p><span class='badge pending'>not frozen</span> the rule has no freeze record yet</p>"
        )
    flags = "<span class='badge posthoc'>post hoc</span>" if freeze.post_hoc else ""
    amends = [f for f in view.freezes if f.kind == "amend"]
    out = (
        f"<p>Frozen {flags}sha256 <span class='hash'>{e(freeze.sha256)}</span> at {e(freeze.frozen_at)}"
        f"{' (post hoc: ' + str(len(freeze.results_at_freeze)) + ' results existed at freeze time)' if freeze.post_hoc else ''}"
        f"; {plural(len(amends), 'amendment')}.</p>"
    )
    if outside is not None:
        # The study says the rule was written down before its stages outside the tool: this
        # freeze is a replay's, made when the replay started, not when the rule was written.
        out += (
            "<p><span class='badge outside'>replay</span> "
            f"This freeze is the replay's ({e(freeze.frozen_at[:10])}); the rule was "
            f"{e(outside.words())} (source: {e(GATE_RECORDS_FILE)}).</p>"
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
    return out + gate_recipes(view)


def precision_note(ctx: ReportContext, view: GateView) -> str:
    """Where the recomputed numbers differ from a published table of the same gate, and why:
    said beside the numbers, as `stagewise gate` says it in the terminal."""
    if view.gate_result is None:
        return ""
    diffs = compare_with_published(
        ctx.study.root, view.gate.stages, [c.to_json() for c in view.gate_result.conditions]
    )
    if not diffs:
        return ""
    items = "".join(
        f"<li>{e(d['label'])} {e(d['column'])}: recomputed {d['recomputed']:.7f}, printed "
        f"{e(d['published'])} ({e(d['table'])})</li>"
        for d in diffs
    )
    return (
        "<p class='note'>Precision: the published cells are rounded to six decimals before "
        "pooling, so a statistic recomputed from them can differ from the published pooled "
        "figure in the sixth decimal; the recomputation is not bent to the printed digits:</p>"
        f"<ul class='note'>{items}</ul>"
    )


def gate_recipes(view: GateView) -> str:
    """What the freeze says of the recipes, and the results left out for another recipe."""
    freeze = view.current_freeze
    if freeze is None:
        return ""
    recipes = recipes_summary(freeze)
    if isinstance(recipes, str):
        return f"<p class='note'>{e(recipes)}.</p>"
    out = (
        f"<p>Recipes frozen for {plural(len(recipes), 'condition')}: only their results count.</p>"
    )
    left_out = view.gate_result.not_counted if view.gate_result is not None else ()
    if left_out:
        out += (
            f"<p class='note'>{plural(len(left_out), 'result')} not counted (their recipe is not the "
            "frozen one):</p><ul>"
            + "".join(f"<li>{e(n.run)}: {e(n.why)}</li>" for n in left_out)
            + "</ul>"
        )
    return out


def _decided_when(decision: DecisionRecord, outside: OutsideFreeze | None) -> str:
    """When a decision was taken, and when it was recorded here, where the two differ."""
    if outside is None or not outside.decided_on:
        return str(decision.decided_at)
    if decision.manual:
        return (
            f"decided outside the tool on {outside.decided_on}; recorded here {decision.decided_at}"
        )
    return (
        f"this replay's decision {decision.decided_at}; decided outside the tool on "
        f"{outside.decided_on}"
    )


def gate_decisions(ctx: ReportContext, view: GateView) -> str:
    if not view.decisions:
        return ""
    outside = outside_freezes(ctx.published).get(view.gate_id)
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
            + f" <span class='note'>{e(_decided_when(d, outside))}</span></li>"
        )
    return "<h4>Decision</h4><ul>" + "".join(items) + "</ul>"


def gate_verdicts(view: GateView) -> str:
    result = view.gate_result
    if result is None:
        return ""
    conds = result.conditions
    summary = " ".join(f"{badge(c.verdict.value)}<b class='id'>{e(c.label)}</b>" for c in conds)
    items = "".join(
        f"<li>{badge(c.verdict.value)}<b class='id'>{e(c.label)}</b> "
        f"<span class='note'>({e(c.condition_id)})</span><ul>"
        + "".join(f"<li>{e(text)}</li>" for text in c.verdict.texts)
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
    if view.gate_result is None and view.published:
        return (
            "<p class='note'>Verdict confidence and variance components need host-seed cells; "
            "this gate has only a published summary, so they cannot be computed here.</p>"
        )
    table = (tables or {}).get(f"confidence_{view.gate_id}")
    if table is not None:
        return render_table(
            table, columns=list(CONFIDENCE_SHOWN), key_columns=list(CONFIDENCE_SHOWN)
        ) + render_table((tables or {}).get(f"variance_{view.gate_id}"))
    # No confidence table: the gate result carries no verdict confidence to show.
    return ""


def render_gate(
    ctx: ReportContext,
    view: GateView,
    tables: dict[str, Table],
    figures: Sequence[RenderedFigure] = (),
) -> str:
    gate = view.gate
    out = [
        f"<h3 id='gate-{e(gate.gate_id)}'>Gate {e(gate.gate_id)} "
        f"<span class='note'>({e(gate.kind)}, {e(gate_budget(ctx, view))}; pools "
        f"{e(' + '.join(gate.stages))})</span></h3>"
    ]
    if gate.description:
        out.append(f"<p>{e(gate.description)}</p>")
    out.append(gate_verdicts(view))
    out.append(
        "<h4>Rule</h4><ul>" + "".join(f"<li>{_rule_text(r)}</li>" for r in gate.rules) + "</ul>"
    )
    outside = outside_freezes(ctx.published).get(gate.gate_id)
    out.append(gate_freeze(view, outside))
    results = gate_results_words(ctx, gate.stages)
    if results:
        out.append(f"<p class='note'>Results of its stages: {e(results)}.</p>")
    out.append(gate_decisions(ctx, view))
    out.extend(render_figure(f) for f in figures_in(figures, f"gate:{gate.gate_id}"))
    if view.gate_result is not None:
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
        out.append(precision_note(ctx, view))
    out.append(gate_confidence(view, tables))
    sens = tables.get(f"sensitivity_{gate.gate_id}")
    if sens is not None:
        drop = {"condition_id", "rule_description", "flip_threshold"}
        columns = [c for c in sens.columns if c not in drop]
        grid = [c for c in columns if c.startswith("at ")]
        out.append(
            render_table(sens, columns=columns, key_columns=[*KEY_SENSITIVITY_COLUMNS, *grid])
        )
        out.extend(
            f"<p class='note'>{e(n)}</p>"
            for n in published_notes(ctx.published, f"sensitivity:{gate.gate_id}")
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
