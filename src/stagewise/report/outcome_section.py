"""The report's opening section: what was decided, by which frozen rule, at what GPU-hour cost
against running everything on, and what is still pending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stagewise.analysis.published import outside_freezes, published_hours, published_notes
from stagewise.report.context import GateView, ReportContext
from stagewise.report.figure_base import as_dict, budget_label
from stagewise.report.figures import RenderedFigure
from stagewise.report.html_blocks import (
    e,
    figures_in,
    fmt_hours,
    fmt_param,
    render_figure,
    skipped_figure,
)
from stagewise.report.stage_status import PUBLISHED_ONLY, results_sentence, stage_statuses


def pending_items(ctx: ReportContext) -> list[str]:
    items = []
    for st in stage_statuses(ctx):
        if st.state == PUBLISHED_ONLY:
            continue  # only a published summary exists; shown as such, nothing to wait for
        if st.planned is None:
            source = next(
                (s["candidate_source"] for s in ctx.status["stages"] if s["stage"] == st.stage),
                "",
            )
            items.append(f"stage {st.stage}: candidates pending ({source})")
        elif st.pending or st.failed:
            items.append(
                f"stage {st.stage}: {st.succeeded}/{st.planned} runs succeeded"
                f" ({st.pending} pending, {st.failed} failed)"
            )
    for view in ctx.gates:
        if view.pending and not (view.active is not None and view.active.manual):
            items.append(f"gate {view.gate_id}: {'; '.join(view.pending)}")
    return items


COUNTERFACTUAL_CAVEAT = (
    "These are accounting for continuations never run, not evidence that the candidates left "
    "out would have lost."
)


def _names(labels: Sequence[str]) -> str:
    if not labels:
        return "none"
    if len(labels) == 1:
        return labels[0]
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def gate_budget(ctx: ReportContext, view: GateView) -> str:
    return budget_label(ctx, view.gate.stages)


def _rules_for(view: GateView, condition_id: str, role: str) -> list[str]:
    """The gate's rules that name this condition or its role (else the ones naming nobody)."""
    named = [r for r in view.gate.rules if condition_id in r.conditions or role in r.roles]
    rules = named or [r for r in view.gate.rules if not r.conditions and not r.roles]
    out = []
    for r in rules:
        params = ", ".join(f"{k} = {fmt_param(k, v)}" for k, v in sorted(r.params.items()))
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
    results: str = ""  # where every stage's results stand (one status per stage)
    notes: list[str] = field(default_factory=list)  # the study's own caveats (published/notes)


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
        f"gate {gate.gate_id} ({gate.kind}, {gate_budget(ctx, view)}: {' + '.join(gate.stages)})"
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
    outside = outside_freezes(ctx.published).get(gate.gate_id)
    if outside is not None and freeze is not None:
        rule += (
            f", written down outside the tool on {outside.written_on} and frozen again by this "
            f"replay on {freeze.frozen_at[:10]}"
        )
    elif outside is not None:
        rule = f"its rule written down outside the tool on {outside.written_on}"
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
    stated = [h for h in published_hours(ctx.published) if h.scope == "all stages"]
    if recorded:
        text = (
            f"GPU-hours: {fmt_hours(recorded)} recorded (training time of the recorded runs), "
            f"{fmt_hours(budgeted)} budgeted"
        )
    elif stated:
        text = (
            f"GPU-hours: {stated[0].printed or fmt_hours(stated[0].hours)} recorded "
            f"({stated[0].hours:g} as published; no run here carries its own), "
            f"{fmt_hours(budgeted)} budgeted"
        )
    else:
        text = (
            f"GPU-hours: {fmt_hours(budgeted)} budgeted "
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
            + ". "
            + COUNTERFACTUAL_CAVEAT
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
        results=results_sentence(stage_statuses(ctx)),
        notes=published_notes(ctx.published, "outcome"),
    )


def section_outcome(ctx: ReportContext, figures: Sequence[RenderedFigure]) -> str:
    out = outcome(ctx)
    more = []
    if out.stopped:
        more.append("<li>" + "</li><li>".join(e(s) for s in out.stopped) + "</li>")
    if out.earlier:
        more.append(f"<li>{e(out.earlier)}</li>")
    more.append(f"<li>{e(out.budget)}</li>")
    more.extend(f"<li>{e(n)}</li>" for n in out.notes)
    if out.pending:
        shown = out.pending[:3]
        rest = len(out.pending) - len(shown)
        more.append(
            "<li>Pending: "
            + e("; ".join(shown))
            + (f" <a href='#pending'>and {rest} more</a>" if rest else "")
            + f" {e(out.results)}</li>"
        )
    else:
        more.append(
            "<li>Pending: nothing; every gate has its decision. " + e(out.results) + "</li>"
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
