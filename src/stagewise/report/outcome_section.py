"""The report's opening section: what was decided, by which frozen rule, at what GPU-hour cost
against running everything on, and what is still pending."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stagewise.analysis.published import outside_freezes, published_hours, published_notes
from stagewise.budget_units import round_hours
from stagewise.gates.results import ConditionResult
from stagewise.html_parts import e
from stagewise.report.context import GateView, ReportContext
from stagewise.report.figure_base import budget_label
from stagewise.report.figures import RenderedFigure
from stagewise.report.html_blocks import (
    figures_in,
    fmt_param,
    hours_text,
    ids_unbroken,
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
            source = next((s.candidate_source for s in ctx.stage_runs if s.stage == st.stage), "")
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
        analysed = [v.gate_id for v in ctx.gates if v.gate_result is not None]
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
    result = view.gate_result
    assert view.active is not None
    if view.active.manual or result is None:
        promoted = [ctx.label(c) for c in view.active.promoted]
        return (
            f"Last decided: {where} promoted {_names(promoted)} by a decision taken outside the "
            f"tool ({view.active.reason or 'no reason given'}).",
            [],
        )
    conds = list(result.conditions)
    good = [c for c in conds if c.verdict.value in ("pass", "promote")]
    bad = [c for c in conds if c.verdict.value in ("fail", "stop")]
    # The reference losing a confirm rule is a finding about the recipes, not a failure of a
    # run: said as what the rule found ("ref was not first in every cell").
    ref_bad = [c for c in bad if c.condition_id == ctx.study.reference]
    bad = [c for c in bad if c not in ref_bad]
    untested = [c for c in conds if c.verdict.value == "untested"]
    incomplete = [c for c in conds if c not in good + bad + ref_bad + untested]
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

    def labels(rows: list[ConditionResult]) -> str:
        return _names([c.label for c in rows])

    def were(rows: list[ConditionResult]) -> str:
        return "was" if len(rows) == 1 else "were"

    lead = (
        f"Last decided: {where} {yes} {labels(good)}"
        + (f" and {no} {labels(bad)}" if bad else "")
        + f" under {rule}"
        + "".join(f"; {finding}" for c in ref_bad for finding in _findings(view, c)[:1])
        + (
            f"; {labels(untested)} {were(untested)} not decided: every cell is there, but no "
            "rule of the gate tested " + ("it" if len(untested) == 1 else "them")
            if untested
            else ""
        )
        + (
            f"; {labels(incomplete)} {were(incomplete)} not decided (incomplete cells)"
            if incomplete
            else ""
        )
        + "."
    )
    stopped = [
        f"{c.label} {no}: " + "; ".join(_rules_for(view, c.condition_id, c.role)) for c in bad
    ]
    stopped += ["; ".join(_findings(view, c)) for c in ref_bad]
    return lead, stopped


# What a rule found when it did not hold, in words (the rule's own text follows in brackets).
FINDINGS = {
    "rank_first_in_all_cells": "{label} was not first in every cell",
    "mean_gap_to_reference": "{label} was more than {threshold} bpb behind the reference on the "
    "mean over cells",
    "max_gap_to_reference": "{label} was more than {threshold} bpb behind the reference in at "
    "least one cell",
}


def _findings(view: GateView, cond: ConditionResult) -> list[str]:
    """What each rule that did not hold for this condition found, as a sentence."""
    label = cond.label
    out: list[str] = []
    for reason in cond.verdict.reasons:
        if reason.kind != "rule" or reason.holds is not False or reason.rule is None:
            continue
        threshold: object = None
        if reason.rule_index is not None and reason.rule_index < len(view.gate.rules):
            threshold = view.gate.rules[reason.rule_index].params.get("threshold")
        template = FINDINGS.get(reason.rule, "{label} did not meet " + reason.rule)
        text = template.format(
            label=label,
            threshold=f"{threshold:g}" if isinstance(threshold, int | float) else "its",
        )
        # The rule's measurement only ("rank 1 in 3/4 cells"): after its description and
        # without the declared reason the text carries at its end.
        found = reason.text.rsplit(": ", 1)[-1]
        if reason.declared and found.endswith(f" ({reason.declared})"):
            found = found[: -len(f" ({reason.declared})")]
        out.append(f"{text} ({found})")
    return out or [f"{label} did not meet the gate's rules"]


def outcome_budget(ctx: ReportContext) -> str:
    budget = ctx.budget_result
    unit = ctx.hours_unit
    if budget is None:
        return (
            f"{unit}: {hours_text(ctx.plan.total_shown)} budgeted by the plan so far; no "
            "budget accounting yet."
        )
    # Hours as `budget --json` writes them (rounded), so the sentence and the table agree.
    recorded = round_hours(budget.total_recorded_gpu_hours)
    budgeted = round_hours(budget.total_budgeted_gpu_hours)
    stated = [h for h in published_hours(ctx.published) if h.scope == "all stages"]
    if budgeted is None:
        planned = (
            "the total budget is known once every gate that feeds a stage has decided how "
            "many candidates it carries on"
        )
    else:
        planned = f"{hours_text(budgeted)} budgeted"
    if recorded:
        text = f"{unit}: {hours_text(recorded)} recorded (training time of the recorded runs), "
        text += planned
    elif stated:
        # The study states recorded hours it has no runs of (a replay of a publication).
        text = (
            f"{unit}: {stated[0].printed or hours_text(stated[0].hours)} recorded "
            f"({stated[0].hours:g} as published; no run here carries its own), {planned}"
        )
    elif budgeted is not None:
        text = (
            f"{unit}: {planned} (no training time recorded: the results were imported or are "
            "pending)"
        )
    else:
        text = f"{unit}: no training time recorded yet; {planned}"
    if budgeted is not None and budgeted < 1:
        # a CPU demo spends minutes: say it in minutes too
        minutes = [f"{60 * v:.3g}" for v in (recorded, budgeted) if v is not None]
        text += f" (= {' and '.join(minutes)} minutes)"
    text += "."
    executed = budget.executed
    alts = [c for c in budget.counterfactuals if c.gate is not None]
    if executed is not None and alts and executed.candidates is not None:
        stages = ", ".join(executed.through_stages)
        text += (
            f" The final confirmation ({stages}) costs "
            f"{hours_text(round_hours(executed.confirmation_gpu_hours))} {unit} with "
            f"{executed.candidates} candidates; continuing all "
            + "; all ".join(
                f"{c.candidates} of {c.gate} would cost "
                f"{hours_text(round_hours(c.confirmation_gpu_hours))}"
                + (
                    f" (+{hours_text(round_hours(c.added_vs_executed))})"
                    if c.added_vs_executed is not None
                    else ""
                )
                for c in alts
                if c.candidates is not None
            )
            + ". "
            + COUNTERFACTUAL_CAVEAT
        )
    elif executed is not None and alts:
        text += (
            " What the final confirmation costs is known once the gates before it have "
            "decided how many candidates reach it."
        )
    return text


def outcome(ctx: ReportContext) -> Outcome:
    view = decided_gate(ctx)
    lead, stopped = outcome_lead(ctx, view)
    earlier_text = ""
    if view is not None:
        before = ctx.gates[: ctx.gates.index(view)]
        counts = {sp.stage.stage_id: sp.candidate_count for sp in ctx.plan.stages}
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
    ids = [
        *(c.label for c in ctx.study.conditions),
        *ctx.study.condition_ids,
        *ctx.study.gates,
        *ctx.study.stages,
    ]

    def text(value: str) -> str:
        return ids_unbroken(e(value), ids)

    more = []
    if out.stopped:
        more.append("<li>" + "</li><li>".join(text(s) for s in out.stopped) + "</li>")
    if out.earlier:
        more.append(f"<li>{text(out.earlier)}</li>")
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
    replayed = outside_freezes(ctx.published)
    frozen = (
        "Frozen rules: "
        + "; ".join(
            f"{e(g)} <span class='hash' title='{e(h)}'>{e(h[:16])}…</span>"
            + (" (this replay's freeze)" if g in replayed else "")
            for g, h in out.hashes
        )
        + ". "
        if out.hashes
        else "No rule frozen yet. "
    )
    outside = [
        g for g in outside_freezes(ctx.published) if g not in {gate for gate, _ in out.hashes}
    ]
    if outside:
        frozen += (
            f"Frozen outside stagewise (no sha256 here): {e(', '.join(outside))}, see each gate. "
        )
    funnel = next(iter(figures_in(figures, "outcome")), None) or skipped_figure(figures, "funnel")
    return (
        f"<div class='outcome'><p class='lead' id='outcome-sentence'>{text(out.lead)}</p>"
        + render_figure(funnel)
        + f"<div class='more'><ul>{''.join(more)}</ul>"
        f"<p class='note'>{frozen}{e(out.chain)}</p></div></div>"
    )
