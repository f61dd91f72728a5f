"""The figures that follow the conditions across gates (or stages), in budget order: the gap
from each gate's best mean, and mean val_bpb against model size.

Recomputed gate results are used where cells exist; published pooled tables fill in the rest
(and are drawn hollow).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stagewise.analysis.published import published_notes
from stagewise.budget_units import format_duration
from stagewise.report.context import ReportContext
from stagewise.report.figure_base import (
    FigureData,
    budget_label,
    color,
    condition_style,
    figure_data,
    figure_table,
)
from stagewise.report.published import PUBLISHED_LABEL, as_float


@dataclass(frozen=True)
class Series:
    """Per-condition numbers of one gate or stage, recomputed or published."""

    key: str
    budget_seconds: float
    order: int
    published: bool
    mean: dict[str, float]
    params_m: dict[str, float]
    tokens_m: dict[str, float]
    budget: str = ""  # in its own unit: '10m', '50Mtok', '2000steps'
    gap: dict[str, float] | None = None  # a published table's own gap_from_best column
    tokens_from: str = ""  # a published table the token counts come from, when not recomputed
    stages: tuple[str, ...] = ()

    @property
    def tick(self) -> str:
        tag = "published" if self.published else "recomputed"
        return f"{self.key}\n{self.budget or format_duration(self.budget_seconds)}\n({tag})"


def _label_map(ctx: ReportContext) -> dict[str, str]:
    """Published tables name conditions by label; map labels (and ids) to condition ids."""
    out = {c.label: c.condition_id for c in ctx.study.conditions}
    out.update({c.condition_id: c.condition_id for c in ctx.study.conditions})
    return out


def gate_series(ctx: ReportContext) -> list[Series]:
    """Recomputed gates where cells exist; published pooled tables otherwise; ordered by budget."""
    stage_index = {s: i for i, s in enumerate(ctx.study.stages)}
    labels = _label_map(ctx)
    series: list[Series] = []
    recomputed = set()
    for view in ctx.gates:
        result = view.gate_result
        if result is None:
            continue
        recomputed.add(view.gate_id)
        mean, params, tokens = {}, {}, {}
        for cond in result.conditions:
            m, p, t = (cond.number(k) for k in ("mean_val_bpb", "params_M", "tokens_M"))
            if m is None or not math.isfinite(m):
                continue
            mean[cond.condition_id] = m
            if p is not None and math.isfinite(p):
                params[cond.condition_id] = p
            if t is not None and math.isfinite(t):
                tokens[cond.condition_id] = t
        tokens_from = ""
        if not tokens:
            # Imported results may carry no token count while the publication prints it for
            # the same gate: draw those (said so in the caption), never a blank bubble.
            for pub in ctx.published:
                if pub.kind == "pooled" and pub.gate == view.gate_id:
                    for row in pub.rows:
                        cid = labels.get(row.get("label", "") or row.get("condition_id", ""))
                        t = as_float(row.get("tokens_M"))
                        if cid in mean and t is not None:
                            tokens[cid] = t
                    if tokens:
                        tokens_from = pub.relpath
                        break
        if mean:
            stages = view.gate.stages
            series.append(
                Series(
                    view.gate_id,
                    max(ctx.study.stages[s].budget_seconds for s in stages),
                    max(stage_index[s] for s in stages),
                    False,
                    mean,
                    params,
                    tokens,
                    budget_label(ctx, stages),
                    tokens_from=tokens_from,
                    stages=tuple(stages),
                )
            )
    for pub in ctx.published:
        if pub.kind != "pooled" or (pub.gate and pub.gate in recomputed):
            continue
        if "mean_val_bpb" not in pub.columns:
            continue
        mean, params, tokens = {}, {}, {}
        gap: dict[str, float] = {}
        for row in pub.rows:
            cid = labels.get(row.get("label", "") or row.get("condition_id", ""))
            value = as_float(row.get("mean_val_bpb"))
            if cid is None or value is None:
                continue
            mean[cid] = value
            printed_gap = as_float(row.get("gap_from_best"))
            if printed_gap is not None:
                gap[cid] = printed_gap
            p = as_float(row.get("params_M"))
            t = as_float(row.get("tokens_M"))
            if p is not None:
                params[cid] = p
            if t is not None:
                tokens[cid] = t
        if mean:
            series.append(
                Series(
                    pub.gate or pub.stages[0],
                    max(ctx.study.stages[s].budget_seconds for s in pub.stages),
                    max(stage_index[s] for s in pub.stages),
                    True,
                    mean,
                    params,
                    tokens,
                    budget_label(ctx, pub.stages),
                    gap=gap if len(gap) == len(mean) else None,
                    stages=tuple(ctx.study.gates[pub.gate].stages if pub.gate else pub.stages),
                )
            )
    series.sort(key=lambda s: (s.budget_seconds, s.order))
    return series


def seeds_caveat(ctx: ReportContext, series: list[Series]) -> str:
    """What a change between gates is evidence of: different runs, often different seeds."""
    seeds = []
    for s in series:
        used = sorted({seed for st in s.stages for seed in ctx.study.stages[st].seeds})
        assumed = any(published_notes(ctx.published, f"seed:{st}") for st in s.stages)
        seeds.append(
            f"{s.key}: {', '.join(map(str, used)) or '-'}{' (assumed)' if assumed else ''}"
        )
    distinct = {x.split(": ", 1)[1].removesuffix(" (assumed)") for x in seeds}
    if len(distinct) > 1:
        return (
            f"Seeds differ across these gates ({'; '.join(seeds)}), so a change between gates "
            "is operational evidence (what each stage of the process saw), not a within-seed "
            "learning curve."
        )
    return (
        "Each gate's points come from its own runs at its own budget, so a change between "
        "gates is operational evidence, not one run's learning curve."
    )


@figure_data("gap_trajectory")
def gap_trajectory_data(ctx: ReportContext) -> list[FigureData] | str:
    series = gate_series(ctx)
    if not series:
        return "no gate has results and no published pooled table exists"
    rows = []
    for x, s in enumerate(series):
        best = min(s.mean.values())
        for cid in ctx.study.condition_ids:
            if cid not in s.mean:
                continue
            style = condition_style(ctx, cid)
            rows.append(
                {
                    "x": x,
                    "series": s.key,
                    "tick": s.tick.replace("\n", " "),
                    "budget_seconds": s.budget_seconds,
                    "published": s.published,
                    "condition_id": cid,
                    "label": ctx.label(cid),
                    "mean_val_bpb": s.mean[cid],
                    "best_mean_val_bpb": best,
                    "gap_from_best": s.gap[cid] if s.gap is not None else s.mean[cid] - best,
                    "gap_source": (
                        "recomputed from cells"
                        if not s.published
                        else "published"
                        if s.gap is not None
                        else "computed here from the published (rounded) means"
                    ),
                    **style,
                }
            )
    any_published = any(s.published for s in series)
    columns = [
        "x",
        "series",
        "tick",
        "budget_seconds",
        "published",
        "condition_id",
        "label",
        "mean_val_bpb",
        "best_mean_val_bpb",
        "gap_from_best",
        "gap_source",
        "color",
        "marker",
        "linestyle",
    ]
    from_means = sorted({str(r["series"]) for r in rows if str(r["gap_source"]) != "published"})
    from_means = [k for k in from_means if any(s.key == k and s.published for s in series)]
    printed = sorted({str(r["series"]) for r in rows if r["gap_source"] == "published"})
    return [
        FigureData(
            "gap_trajectory",
            "gap_trajectory",
            "across",
            "Gap from the best mean, gate by gate (or stage)"
            + (" (hollow = published summary, not recomputed)" if any_published else ""),
            "Each condition's mean val_bpb minus the best mean of that gate or stage, in budget "
            "order; filled markers are recomputed from cells"
            + (f"; hollow markers: {PUBLISHED_LABEL}" if any_published else "")
            + (f" (the published gap_from_best of {', '.join(printed)})" if printed else "")
            + (
                f"; the gaps of {', '.join(from_means)} are computed here from the published "
                "means, which are rounded to six decimals"
                if from_means
                else ""
            )
            + ". "
            + seeds_caveat(ctx, series),
            ("tables/gate_*.csv", "tables/published_*.csv"),
            figure_table("gap_trajectory", "Gap from the best mean per gate", columns, rows),
        )
    ]


@figure_data("cost_quality")
def cost_quality_data(ctx: ReportContext) -> list[FigureData] | str:
    series = [s for s in gate_series(ctx) if s.params_m]
    if not series:
        return "no gate or published table gives parameter counts yet"
    all_tokens = [t for s in series for t in s.tokens_m.values()]
    tmax = max(all_tokens) if all_tokens else 0.0
    rows = []
    for i, s in enumerate(series):
        for cid in s.mean:
            if cid not in s.params_m:
                continue
            tokens = s.tokens_m.get(cid)
            # Area grows with the square root so a 100x token count stays on the page.
            area = 30 + 900 * math.sqrt(tokens / tmax) if tokens is not None and tmax > 0 else 60.0
            rows.append(
                {
                    "series": s.key,
                    "budget_seconds": s.budget_seconds,
                    "published": s.published,
                    "color": color(i),
                    "condition_id": cid,
                    "label": ctx.label(cid),
                    "params_M": s.params_m[cid],
                    "mean_val_bpb": s.mean[cid],
                    "tokens_M": tokens,
                    "bubble_area": area,
                }
            )
    has_tokens = any(r["tokens_M"] is not None for r in rows)
    any_published = any(s.published for s in series)
    columns = [
        "series",
        "budget_seconds",
        "published",
        "color",
        "condition_id",
        "label",
        "params_M",
        "mean_val_bpb",
        "tokens_M",
        "bubble_area",
    ]
    return [
        FigureData(
            "cost_quality",
            "cost_quality",
            "across",
            "Mean val_bpb against model size"
            + (" (bubble area ~ tokens trained)" if has_tokens else ""),
            "Mean val_bpb against parameters per gate or stage"
            + (
                "; bubble area grows with the tokens trained, summed over cells"
                if has_tokens
                else ""
            )
            + (
                "; bubbles without a token count have a fixed size"
                if has_tokens and not all(r["tokens_M"] is not None for r in rows)
                else ""
            )
            + (f"; hollow bubbles: {PUBLISHED_LABEL}" if any_published else "")
            + "".join(
                f"; the token counts of {s.key} are those of {s.tokens_from} (its recorded runs "
                "carry none)"
                for s in series
                if s.tokens_from
            )
            + "."
            + "".join(f" {n}" for n in published_notes(ctx.published, "cost_quality")),
            ("tables/gate_*.csv", "tables/published_*.csv"),
            figure_table("cost_quality", "Cost-quality points", columns, rows),
        )
    ]
