"""The report's figures: matplotlib drawing of the rows that the figure data functions compute.

A figure function here only maps a `FigureData` table to marks: every number, colour and title
comes from the data (tested by number in tests/report/test_figure_data.py). Each figure is saved
as PNG and SVG with deterministic metadata (no dates, fixed SVG ids) and its data beside it as
CSV and JSON. A family without data yields one note instead of a figure, so a half-done study
still renders. matplotlib is imported inside the functions (Agg backend), never when the CLI
starts.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stagewise.paths import safe_join
from stagewise.report.context import ReportContext
from stagewise.report.figure_base import (
    ADDED_COLOR,
    EXECUTED_COLOR,
    GATE_COLOR,
    OKABE_ITO,
    STAGE_COLOR,
    FigureData,
)
from stagewise.report.figure_data import FIGURE_DATA

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["OKABE_ITO", "RenderedFigure", "figure_specs", "render_figures"]

DPI = 110


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
    section: str = ""  # where the report shows it: "outcome", "gate:<id>", "across", ...
    data: list[Path] = field(default_factory=list)  # figures/<name>.csv and .json


DrawFn = Callable[[FigureData], "Figure"]
_DRAW: dict[str, DrawFn] = {}


def draws(kind: str) -> Callable[[DrawFn], DrawFn]:
    def wrap(fn: DrawFn) -> DrawFn:
        _DRAW[kind] = fn
        return fn

    return wrap


def figure_specs() -> dict[str, Callable[[ReportContext], list[FigureData] | str]]:
    """Figure families by name in report order: data function (figure_data.py) + drawing (here)."""
    return dict(FIGURE_DATA)


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


def matplotlib_version() -> str:
    """The matplotlib that draws: figures of another version differ in bytes, not in data."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("matplotlib")
    except PackageNotFoundError:  # not installed as a distribution: compare by tables only
        return ""


def render_figures(
    ctx: ReportContext, out: Path, names: list[str] | None = None
) -> list[RenderedFigure]:
    """Draw every figure family (or `names`) into `out`: <name>.png, .svg, .csv and .json."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    rendered = []
    for family, data_fn in FIGURE_DATA.items():
        if names is not None and family not in names:
            continue
        result = data_fn(ctx)
        if isinstance(result, str):
            rendered.append(
                RenderedFigure(family, family.replace("_", " "), "", (), skipped=result)
            )
            continue
        for data in result:
            item = RenderedFigure(
                data.name, data.title, data.caption, data.sources, section=data.section
            )
            fig = _DRAW[data.kind](data)
            item.png = safe_join(out, f"{data.name}.png")  # names hold gate and stage ids
            item.svg = safe_join(out, f"{data.name}.svg")
            fig.savefig(item.png, dpi=DPI, metadata={"Software": None})
            fig.savefig(item.svg, metadata={"Date": None, "Creator": None})
            plt.close(fig)
            item.data = data.table.write(out)
            rendered.append(item)
    return rendered


def _legend_right(ax: Any) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


# --------------------------------------------------------------------------- the drawings


@draws("funnel")
def draw_funnel(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, ax = plt.subplots(figsize=(7.0, 0.24 * len(rows) + 0.9))
    ys = list(range(len(rows)))[::-1]
    for y, row in zip(ys, rows, strict=True):
        ax.barh(
            y,
            row["count"],
            color=row["color"],
            hatch="//" if row["pending"] else None,
            edgecolor="#333333" if row["pending"] else "none",
            height=0.75,
        )
        ax.text(row["count"] + 0.1, y, row["text"], va="center", fontsize=8)
    ax.set_yticks(ys, [r["bar"] for r in rows], fontsize=8)
    ax.set_xlabel("candidates (number of conditions)")
    ax.set_title(textwrap.fill(data.title, 80))
    fig.tight_layout()
    return cast("Figure", fig)


@draws("gap_trajectory")
def draw_gap_trajectory(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    ticks: dict[int, str] = {}
    for cid in dict.fromkeys(r["condition_id"] for r in rows):
        mine = [r for r in rows if r["condition_id"] == cid]
        first = mine[0]
        ax.plot(
            [r["x"] for r in mine],
            [r["gap_from_best"] for r in mine],
            color=first["color"],
            linestyle=first["linestyle"],
            linewidth=1.2,
            label=first["label"],
        )
        for r in mine:
            ticks[r["x"]] = r["tick"]
            ax.plot(
                r["x"],
                r["gap_from_best"],
                marker=r["marker"],
                color=r["color"],
                markersize=6,
                markerfacecolor="white" if r["published"] else r["color"],
                linestyle="none",
            )
    xs = sorted(ticks)
    ax.set_xticks(xs, [textwrap.fill(ticks[x], 12) for x in xs], fontsize=8)
    ax.set_xlabel("gate or stage (budget per run)")
    ax.set_ylabel("mean gap from the best (val_bpb, bits per byte)")
    ax.set_title(textwrap.fill(data.title, 80))
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    return cast("Figure", fig)


@draws("host_seed_cells")
def draw_host_seed_cells(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    labels: dict[int, tuple[str, bool]] = {r["x"]: (r["label"], r["reference"]) for r in rows}
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    for cell in sorted({r["cell"] for r in rows}):
        mine = [r for r in rows if r["cell"] == cell]
        ax.plot(
            [r["x"] + r["offset"] for r in mine],
            [r["val_bpb"] for r in mine],
            linestyle="none",
            marker=mine[0]["marker"],
            color=mine[0]["color"],
            markersize=7,
            label=f"{mine[0]['host']}, seed {mine[0]['seed']}",
        )
    for x, (_label, is_ref) in labels.items():
        first = next(r for r in rows if r["x"] == x)
        if is_ref:
            ax.axvspan(x - 0.45, x + 0.45, color="#999999", alpha=0.2, linewidth=0)
        if first["mean_val_bpb"] is not None:
            ax.hlines(first["mean_val_bpb"], x - 0.35, x + 0.35, color="#000000", linewidth=1.5)
        if first["interval_low"] is not None and first["interval_high"] is not None:
            ax.vlines(x, first["interval_low"], first["interval_high"], color="#000000", lw=1)
    xs = sorted(labels)
    ax.set_xticks(
        xs,
        [textwrap.fill(labels[x][0], 14) + ("\n(reference)" if labels[x][1] else "") for x in xs],
        fontsize=8,
    )
    ax.set_xlabel("condition")
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.set_title(textwrap.fill(data.title, 80))
    _legend_right(ax)
    fig.tight_layout()
    return cast("Figure", fig)


@draws("cost_quality")
def draw_cost_quality(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    for series in dict.fromkeys(r["series"] for r in rows):
        mine = [r for r in rows if r["series"] == series]
        first = mine[0]
        ax.scatter(
            [r["params_M"] for r in mine],
            [r["mean_val_bpb"] for r in mine],
            s=[r["bubble_area"] for r in mine],
            facecolors="none" if first["published"] else first["color"],
            edgecolors=first["color"],
            alpha=0.8,
            linewidths=1.5,
            label=f"{series} ({'published' if first['published'] else 'recomputed'})",
        )
        for r in mine:
            ax.annotate(
                r["label"],
                (r["params_M"], r["mean_val_bpb"]),
                fontsize=6,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("mean val_bpb (bits per byte, lower is better)")
    ax.set_title(textwrap.fill(data.title, 80))
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, markerscale=0.4
    )
    fig.tight_layout()
    return cast("Figure", fig)


@draws("budget")
def draw_budget(data: FigureData) -> Figure:
    plt = _plt()
    stages = [r for r in data.table.rows if r["panel"] == "stage"]
    counter = [r for r in data.table.rows if r["panel"] == "counterfactual"]
    panels = 2 if counter else 1
    fig, axes = plt.subplots(1, panels, figsize=(11 if counter else 7, 4.4), squeeze=False)
    ax = axes[0, 0]
    xs = list(range(len(stages)))
    ax.bar(
        [x - 0.2 for x in xs],
        [r["budgeted_gpu_hours"] or 0.0 for r in stages],
        width=0.4,
        color=STAGE_COLOR,
        label="budgeted",
    )
    if any(r["recorded_gpu_hours"] for r in stages):
        ax.bar(
            [x + 0.2 for x in xs],
            [r["recorded_gpu_hours"] or 0.0 for r in stages],
            width=0.4,
            color=GATE_COLOR,
            label="recorded (sum of training time)",
        )
    for x, r in zip(xs, stages, strict=True):
        if r["budgeted_gpu_hours"] is None:
            ax.text(x - 0.2, 0, "pending", rotation=90, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs, [r["label"] for r in stages], rotation=45, ha="right")
    ax.set_xlabel("stage")
    ax.set_ylabel("GPU-hours")
    ax.set_title("Per stage")
    ax.legend(fontsize=7, frameon=False)
    if counter:
        ax2 = axes[0, 1]
        ys = list(range(len(counter)))[::-1]
        ax2.barh(
            ys, [r["executed_gpu_hours"] for r in counter], color=EXECUTED_COLOR, label="executed"
        )
        ax2.barh(
            ys,
            [r["added_gpu_hours"] for r in counter],
            left=[r["executed_gpu_hours"] for r in counter],
            color=ADDED_COLOR,
            label="added by the counterfactual",
        )
        for y, r in zip(ys, counter, strict=True):
            ax2.text(r["total_gpu_hours"], y, f" {r['total_gpu_hours']:g}", va="center", fontsize=8)
        ax2.set_yticks(ys, [textwrap.fill(r["label"], 34) for r in counter], fontsize=7)
        ax2.set_xlabel("GPU-hours of the final confirmation")
        ax2.set_title("Continue-all counterfactuals")
        ax2.legend(
            fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2
        )
    fig.suptitle(textwrap.fill(data.title, 110), fontsize=10)
    fig.tight_layout()
    return cast("Figure", fig)


@draws("learning_curves")
def draw_learning_curves(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), squeeze=False)
    xlabels = {"training_seconds": "training seconds", "tokens": "tokens (millions)"}
    scale = {"training_seconds": 1.0, "tokens": 1e-6}
    for ax, axis in zip(axes[0], ("training_seconds", "tokens"), strict=True):
        for cid in dict.fromkeys(r["condition_id"] for r in rows):
            mine = [r for r in rows if r["condition_id"] == cid and r["axis"] == axis]
            if not mine:
                continue
            xs = [r["x"] * scale[axis] for r in mine]
            first = mine[0]
            ax.plot(
                xs,
                [r["mean_loss"] for r in mine],
                color=first["color"],
                linestyle=first["linestyle"],
                linewidth=1.3,
                label=f"{first['label']} ({first['cells']} cells)",
            )
            if first["cells"] > 1:
                ax.fill_between(
                    xs,
                    [r["low_loss"] for r in mine],
                    [r["high_loss"] for r in mine],
                    color=first["color"],
                    alpha=0.18,
                    linewidth=0,
                )
        ax.set_xlabel(xlabels[axis])
        ax.set_ylabel("train loss (nats per token, smoothed)")
    _legend_right(axes[0, 1])
    fig.suptitle(textwrap.fill(data.title, 110), fontsize=10)
    fig.tight_layout()
    return cast("Figure", fig)
