"""The report's figures: one small function each, registered by name, drawn with matplotlib.

Every figure is saved as PNG and SVG with deterministic metadata (no dates, fixed SVG ids), uses
the Okabe-Ito colour-blind-safe palette, and labels every axis with its unit. A figure without
data returns a note instead of a figure, so a half-done study still renders.
matplotlib is imported inside the functions (Agg backend), never when the CLI starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stagewise.budget_units import format_duration
from stagewise.report.context import ReportContext
from stagewise.report.published import PUBLISHED_LABEL, as_float

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Okabe & Ito (2008), the colour-blind-safe palette; black last.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    fn: Callable[[ReportContext], Figure | str]
    sources: tuple[str, ...]
    caption: str


@dataclass
class RenderedFigure:
    name: str
    title: str
    caption: str
    sources: tuple[str, ...]
    png: Path | None = None
    svg: Path | None = None
    skipped: str | None = None  # why the figure has no data
    notes: list[str] = field(default_factory=list)


_FIGURES: dict[str, FigureSpec] = {}


def figure(
    name: str, title: str, sources: tuple[str, ...], caption: str
) -> Callable[[Callable[[ReportContext], Figure | str]], Callable[[ReportContext], Figure | str]]:
    """Register a figure function under `name` (the file stem of its PNG/SVG)."""

    def wrap(
        fn: Callable[[ReportContext], Figure | str],
    ) -> Callable[[ReportContext], Figure | str]:
        _FIGURES[name] = FigureSpec(name, title, fn, sources, caption)
        return fn

    return wrap


def figure_specs() -> dict[str, FigureSpec]:
    return dict(_FIGURES)


def _plt() -> Any:  # matplotlib.pyplot, imported late
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.hashsalt": "stagewise",  # stable SVG ids: the same study gives the same bytes
            "font.size": 9,
            "axes.titlesize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def condition_styles(ctx: ReportContext) -> dict[str, dict[str, Any]]:
    """One colour/marker/linestyle per condition, stable across figures."""
    styles = {}
    for i, cid in enumerate(ctx.study.condition_ids):
        styles[cid] = {
            "color": color(i),
            "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
        }
    return styles


def render_figures(
    ctx: ReportContext, out: Path, names: list[str] | None = None
) -> list[RenderedFigure]:
    """Draw every registered figure (or `names`) into `out` as <name>.png and <name>.svg."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    rendered = []
    for spec in figure_specs().values():
        if names is not None and spec.name not in names:
            continue
        item = RenderedFigure(spec.name, spec.title, spec.caption, spec.sources)
        result = spec.fn(ctx)
        if isinstance(result, str):
            item.skipped = result
        else:
            item.png = out / f"{spec.name}.png"
            item.svg = out / f"{spec.name}.svg"
            result.savefig(item.png, dpi=110, metadata={"Software": None})
            result.savefig(item.svg, metadata={"Date": None, "Creator": None})
            plt.close(result)
        rendered.append(item)
    return rendered


# --------------------------------------------------------------------------- helpers


def _label_map(ctx: ReportContext) -> dict[str, str]:
    """Published tables name conditions by label; map labels (and ids) to condition ids."""
    out = {c.label: c.condition_id for c in ctx.study.conditions}
    out.update({c.condition_id: c.condition_id for c in ctx.study.conditions})
    return out


@dataclass
class Series:
    """Per-condition numbers of one gate or stage, recomputed or published."""

    key: str
    budget_seconds: float
    order: int
    published: bool
    mean: dict[str, float]
    params_m: dict[str, float]
    tokens_m: dict[str, float]

    @property
    def tick(self) -> str:
        tag = "published" if self.published else "recomputed"
        return f"{self.key}\n{format_duration(self.budget_seconds)}\n({tag})"


def gate_series(ctx: ReportContext) -> list[Series]:
    """Recomputed gates where cells exist; published pooled tables otherwise; ordered by budget."""
    stage_index = {s: i for i, s in enumerate(ctx.study.stages)}
    labels = _label_map(ctx)
    series: list[Series] = []
    recomputed = set()
    for view in ctx.gates:
        if view.result is None:
            continue
        recomputed.add(view.gate_id)
        mean, params, tokens = {}, {}, {}
        for cond in view.result.get("conditions", []):
            cid = cond.get("condition_id")
            if cond.get("mean_val_bpb") is None or cid is None:
                continue
            mean[cid] = float(cond["mean_val_bpb"])
            if cond.get("params_M") is not None:
                params[cid] = float(cond["params_M"])
            if cond.get("tokens_M") is not None:
                tokens[cid] = float(cond["tokens_M"])
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
                )
            )
    for pub in ctx.published:
        if pub.kind != "pooled" or (pub.gate and pub.gate in recomputed):
            continue
        if "mean_val_bpb" not in pub.columns:
            continue
        mean, params, tokens = {}, {}, {}
        for row in pub.rows:
            cid = labels.get(row.get("label", "") or row.get("condition_id", ""))
            value = as_float(row.get("mean_val_bpb"))
            if cid is None or value is None:
                continue
            mean[cid] = value
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
                )
            )
    series.sort(key=lambda s: (s.budget_seconds, s.order))
    return series


# --------------------------------------------------------------------------- the figures


@figure(
    "funnel",
    "Promotion funnel",
    ("tables/plan.csv", "tables/decisions.csv", "study/study.toml"),
    "Candidates per stage and the number each gate promoted (or passed); hatched = pending.",
)
def funnel(ctx: ReportContext) -> Figure | str:
    plt = _plt()
    bars: list[tuple[str, int, str, bool]] = []  # label, count, kind, pending
    gate_after: dict[str, list[str]] = {}
    for view in ctx.gates:
        gate_after.setdefault(view.gate.stages[-1], []).append(view.gate_id)
    for st in ctx.plan_dict["stages"]:
        count = st["candidate_count"]
        pending = st["candidates"] is None
        bars.append((f"{st['stage']} ({st['budget']})", count or 0, "stage", pending))
        for gid in gate_after.get(st["stage"], []):
            view = ctx.gate(gid)
            if view.gate.kind == "confirm" and view.result is not None:
                passed = [
                    c for c in view.result.get("conditions", []) if c.get("verdict") == "pass"
                ]
                bars.append((f"{gid}: passed", len(passed), "gate", False))
            elif view.active is not None:
                tag = " (manual)" if view.active.manual else ""
                bars.append((f"{gid}: promoted{tag}", len(view.active.promoted), "gate", False))
            else:
                bars.append((f"{gid}: pending", 0, "gate", True))
    if not bars:
        return "no stages"
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(bars) + 1.2))
    ys = list(range(len(bars)))[::-1]
    for y, (_label, count, kind, pending) in zip(ys, bars, strict=True):
        ax.barh(
            y,
            count,
            color=color(0) if kind == "stage" else color(1),
            hatch="//" if pending else None,
            edgecolor="#333333" if pending else "none",
            alpha=0.5 if pending else 1.0,
        )
        ax.text(count + 0.1, y, "pending" if pending and not count else str(count), va="center")
    ax.set_yticks(ys, [b[0] for b in bars])
    ax.set_xlabel("candidates (number of conditions)")
    ax.set_ylabel("stage (budget) / gate")
    ax.set_title("Promotion funnel: blue = stage candidates, orange = gate outcome")
    fig.tight_layout()
    return cast("Figure", fig)


@figure(
    "gap_trajectory",
    "Gap from the stage best across gates",
    ("tables/gate_*.csv", "tables/published_*.csv"),
    "Each condition's mean val_bpb minus the best mean of that gate or stage. Filled markers: "
    "recomputed from cells; hollow markers: " + PUBLISHED_LABEL + ".",
)
def gap_trajectory(ctx: ReportContext) -> Figure | str:
    series = gate_series(ctx)
    if not series:
        return "no gate has results and no published pooled table exists"
    plt = _plt()
    styles = condition_styles(ctx)
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for cid in ctx.study.condition_ids:
        xs, ys, pub = [], [], []
        for x, s in enumerate(series):
            if cid in s.mean:
                xs.append(x)
                ys.append(s.mean[cid] - min(s.mean.values()))
                pub.append(s.published)
        if not xs:
            continue
        st = styles[cid]
        ax.plot(
            xs,
            ys,
            color=st["color"],
            linestyle=st["linestyle"],
            linewidth=1.2,
            label=ctx.label(cid),
        )
        for x, y, p in zip(xs, ys, pub, strict=True):
            ax.plot(
                x,
                y,
                marker=st["marker"],
                color=st["color"],
                markersize=6,
                markerfacecolor="white" if p else st["color"],
                linestyle="none",
            )
    ax.set_xticks(range(len(series)), [s.tick for s in series], fontsize=8)
    ax.set_xlabel("gate or stage (wall-clock budget per run)")
    ax.set_ylabel("mean gap from the stage best (val_bpb, bits per byte)")
    ax.set_title("Gap trajectory (hollow = published summary, not recomputed)")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return cast("Figure", fig)


@figure(
    "host_seed_cells",
    "Host-seed cells per gate",
    ("results/runs.csv", "study/study.toml"),
    "Each condition's val_bpb in every host-seed cell of the gate; the reference is shaded.",
)
def host_seed_cells(ctx: ReportContext) -> Figure | str:
    views = [v for v in ctx.gates if v.cells]
    if not views:
        return "no gate has recorded cells yet"
    plt = _plt()
    fig, axes = plt.subplots(len(views), 1, figsize=(8.5, 3.4 * len(views)), squeeze=False)
    ref = ctx.study.reference
    for ax, view in zip(axes[:, 0], views, strict=True):
        conds = [
            c for c in ctx.study.condition_ids if any(x["condition_id"] == c for x in view.cells)
        ]
        keys = sorted({(x["host"], x["seed"]) for x in view.cells})
        width = 0.6
        for k, (host, seed) in enumerate(keys):
            offset = (k - (len(keys) - 1) / 2) * width / max(1, len(keys))
            xs, ys = [], []
            for x in view.cells:
                if (x["host"], x["seed"]) == (host, seed):
                    xs.append(conds.index(x["condition_id"]) + offset)
                    ys.append(x["val_bpb"])
            hosts = sorted({h for h, _ in keys})
            ax.plot(
                xs,
                ys,
                linestyle="none",
                marker=MARKERS[hosts.index(host) % len(MARKERS)],
                color=color(k),
                markersize=7,
                label=f"{host}, seed {seed}",
            )
        if ref in conds:
            i = conds.index(ref)
            ax.axvspan(i - 0.45, i + 0.45, color="#999999", alpha=0.2, linewidth=0)
        ax.set_xticks(
            range(len(conds)),
            [f"{ctx.label(c)}\n(reference)" if c == ref else ctx.label(c) for c in conds],
            fontsize=8,
        )
        ax.set_xlabel("condition")
        ax.set_ylabel("val_bpb (bits per byte)")
        ax.set_title(f"{view.gate_id}: {' + '.join(view.gate.stages)}")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return cast("Figure", fig)


@figure(
    "cost_quality",
    "Cost-quality frontier",
    ("tables/gate_*.csv", "tables/published_*.csv"),
    "Mean val_bpb against model size per gate or stage; bubble area proportional to the tokens "
    "trained, summed over cells. Hollow bubbles: " + PUBLISHED_LABEL + ".",
)
def cost_quality(ctx: ReportContext) -> Figure | str:
    series = [s for s in gate_series(ctx) if s.params_m]
    if not series:
        return "no gate or published table gives parameter counts yet"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    all_tokens = [t for s in series for t in s.tokens_m.values()]
    tmax = max(all_tokens) if all_tokens else 1.0
    for i, s in enumerate(series):
        cids = [c for c in s.mean if c in s.params_m]
        xs = [s.params_m[c] for c in cids]
        ys = [s.mean[c] for c in cids]
        sizes = [
            30 + 900 * math.sqrt(s.tokens_m.get(c, 0.0) / tmax) if s.tokens_m else 60 for c in cids
        ]
        c = color(i)
        ax.scatter(
            xs,
            ys,
            s=sizes,
            facecolors="none" if s.published else c,
            edgecolors=c,
            alpha=0.8,
            linewidths=1.5,
            label=f"{s.key} ({format_duration(s.budget_seconds)}, "
            f"{'published' if s.published else 'recomputed'})"
            + ("" if s.tokens_m else "\n(tokens not recorded: fixed size)"),
        )
        for cid, x, y in zip(cids, xs, ys, strict=True):
            ax.annotate(
                ctx.label(cid), (x, y), fontsize=6, xytext=(4, 3), textcoords="offset points"
            )
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("mean val_bpb (bits per byte, lower is better)")
    ax.set_title("Cost-quality frontier (bubble area ~ tokens trained, summed over cells)")
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, markerscale=0.4
    )
    fig.tight_layout()
    return cast("Figure", fig)


def _num(row: dict[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            f = as_float(value)
            if f is not None:
                return f
    return None


def _text(row: dict[str, Any], *keys: str) -> str:
    for key in keys:
        if row.get(key):
            return str(row[key])
    return "?"


@figure(
    "budget",
    "Budget accounting",
    ("tables/budget.csv", "tables/budget_counterfactuals.csv", "tables/plan.csv"),
    "Budgeted and recorded GPU-hours per stage, and the cost of continuing all candidates of a "
    "gate to the final confirmation.",
)
def budget(ctx: ReportContext) -> Figure | str:
    data = ctx.budget or {}
    stages = data.get("stages") if isinstance(data.get("stages"), list) else None
    counter = data.get("counterfactuals") if isinstance(data.get("counterfactuals"), list) else None
    counter_published = False
    if not stages:
        stages = [
            {"stage": s["stage"], "budgeted_gpu_hours": s["budgeted_gpu_hours"]}
            for s in ctx.plan_dict["stages"]
        ]
    if not counter:
        pub = next((p for p in ctx.published if p.kind == "budget"), None)
        if pub is not None:
            counter = [dict(r) for r in pub.rows]
            counter_published = True
    if not stages:
        return "no stages"
    plt = _plt()
    panels = 2 if counter else 1
    fig, axes = plt.subplots(1, panels, figsize=(11 if counter else 7, 4.6), squeeze=False)
    ax = axes[0, 0]
    names = [_text(s, "stage", "stage_id") for s in stages]
    budgeted = [_num(s, "budgeted_gpu_hours", "budgeted") for s in stages]
    recorded = [_num(s, "recorded_gpu_hours", "recorded") for s in stages]
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs],
        [b or 0.0 for b in budgeted],
        width=0.4,
        color=color(0),
        label="budgeted",
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [r or 0.0 for r in recorded],
        width=0.4,
        color=color(1),
        label="recorded (sum of training time)",
    )
    for x, b in zip(xs, budgeted, strict=True):
        if b is None:
            ax.text(x - 0.2, 0, "pending", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), names, rotation=45, ha="right")
    ax.set_xlabel("stage")
    ax.set_ylabel("GPU-hours")
    no_record = all(r is None or r == 0 for r in recorded)
    ax.set_title(
        "Budgeted vs recorded GPU-hours per stage"
        + ("\n(no recorded training time yet)" if no_record else "")
    )
    ax.legend(fontsize=7, frameon=False)
    if counter:
        ax2 = axes[0, 1]
        labels = [_text(c, "scenario", "label", "name", "gate") for c in counter]
        totals = [
            _num(c, "confirmation_gpu_hours", "gpu_hours", "total_gpu_hours", "cost_gpu_hours")
            or 0.0
            for c in counter
        ]
        added = [_num(c, "added_vs_executed", "added_gpu_hours", "added") or 0.0 for c in counter]
        ys = list(range(len(labels)))[::-1]
        ax2.barh(
            ys,
            [t - a for t, a in zip(totals, added, strict=True)],
            color=color(0),
            label="executed",
        )
        ax2.barh(
            ys,
            added,
            left=[t - a for t, a in zip(totals, added, strict=True)],
            color=color(5),
            label="added by the counterfactual",
        )
        for y, t in zip(ys, totals, strict=True):
            ax2.text(t, y, f" {t:g}", va="center", fontsize=8)
        import textwrap

        ax2.set_yticks(ys, [textwrap.fill(lbl, 34) for lbl in labels], fontsize=7)
        ax2.set_xlabel("GPU-hours")
        ax2.set_ylabel("scenario")
        ax2.set_title("Counterfactuals" + (f"\n({PUBLISHED_LABEL})" if counter_published else ""))
        ax2.legend(
            fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2
        )
    fig.tight_layout()
    return cast("Figure", fig)
