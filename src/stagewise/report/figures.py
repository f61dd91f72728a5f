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
from collections.abc import Callable, Mapping
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
from stagewise.report.legibility import FIG_WIDTH

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
            # report.legibility: 7-inch figures shown ~720 px wide keep 9.5 pt at >= 9 pt.
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "xtick.labelsize": TEXT_PT,
            "ytick.labelsize": TEXT_PT,
            "legend.fontsize": TEXT_PT,
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


TEXT_PT = 9.5  # the smallest text of a figure: >= 9 pt on an 800 px page (report.legibility)


def _legend_below(fig: Any, ax: Any, ncol: int = 3, **kw: Any) -> None:
    """The axes' legend under the figure, inside the canvas (constrained layout makes room);
    as many columns as fit the figure's width at the legend's size."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        longest = max(len(str(label)) for label in labels) + 6  # the marker and the gap
        ncol = max(1, min(ncol, int(FIG_WIDTH * 72 / (TEXT_PT * 0.6) / longest)))
        fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, **kw)


def _fit_right(fig: Any, ax: Any, texts: list[Any], tries: int = 4) -> None:
    """Widen the x range until every text drawn beside a bar ends inside the axes."""
    for _ in range(tries):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        right = ax.get_window_extent(renderer).x1
        over = max((t.get_window_extent(renderer).x1 - right for t in texts), default=0.0)
        if over <= 0:
            return
        lo, hi = ax.get_xlim()
        span = ax.get_window_extent(renderer).width or 1.0
        ax.set_xlim(lo, hi + (hi - lo) * (over + 4) / span)


def _spread(fig: Any, labels: list[Any], tries: int = 30) -> None:
    """Move point labels apart (upwards, in points) until no two overlap."""
    for _ in range(tries):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        boxes = [(t, t.get_window_extent(renderer)) for t in labels]
        moved = False
        boxes.sort(key=lambda tb: (tb[1].y0, tb[1].x0))
        for i, (_a, box_a) in enumerate(boxes):
            for b, box_b in boxes[i + 1 :]:
                dx = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
                dy = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
                if dx > 0 and dy > 0:
                    x, y = b.get_position()
                    b.set_position((x, y + (dy + 2) * 72 / fig.dpi))
                    moved = True
                    break
            if moved:
                break
        if not moved:
            return


def _num(row: Mapping[str, object], key: str) -> float:
    """A number of a figure's row (the figure's own data put it there: a bug otherwise)."""
    value = row[key]
    if not isinstance(value, int | float):
        raise TypeError(f"figure row {key!r}: expected a number, but got {value!r}")
    return float(value)


def _int(row: Mapping[str, object], key: str) -> int:
    value = row[key]
    if not isinstance(value, int):
        raise TypeError(f"figure row {key!r}: expected an integer, but got {value!r}")
    return value


def _wrap(text: str, width: int) -> str:
    """Wrapped at spaces only: an id such as `ref-d2` or `d1/ar96` is never broken."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def _integer_axis(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


# --------------------------------------------------------------------------- the drawings


@draws("funnel")
def draw_funnel(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    # 5.5 in: the outcome shows it in half the page beside the lead sentence on a wide screen.
    fig, ax = plt.subplots(figsize=(5.5, 0.25 * len(rows) + 1.05), layout="constrained", dpi=DPI)
    ys = list(range(len(rows)))[::-1]
    texts = []
    for y, row in zip(ys, rows, strict=True):
        ax.barh(
            y,
            row["count"],
            color=row["color"],
            hatch="//" if row["pending"] else None,
            edgecolor="#333333" if row["pending"] else "none",
            height=0.75,
        )
        texts.append(
            ax.text(_num(row, "count") + 0.1, y, row["text"], va="center", fontsize=TEXT_PT)
        )
    ax.set_yticks(ys, [r["bar"] for r in rows], fontsize=TEXT_PT)
    ax.set_xlabel("candidates (number of conditions)")
    _integer_axis(ax.xaxis)
    ax.set_xlim(0, max((_num(r, "count") for r in rows), default=1) + 0.5)
    # Over the figure, not the axes: the bar names push the axes right.
    fig.suptitle(_wrap(data.title, 52), fontsize=11)
    _fit_right(fig, ax, texts)
    return cast("Figure", fig)


@draws("gap_trajectory")
def draw_gap_trajectory(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 5.2), layout="constrained", dpi=DPI)
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
            ticks[_int(r, "x")] = str(r["tick"])
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
    width = max(8, int(60 / max(1, len(xs))))
    ax.set_xticks(xs, [_wrap(ticks[x], width) for x in xs], fontsize=TEXT_PT)
    ax.set_xlabel("gate or stage (budget per run)")
    ax.set_ylabel(_wrap("mean gap from the best (val_bpb, bits per byte)", 30))
    ax.set_title(_wrap(data.title, 70))
    _legend_below(fig, ax, ncol=3)
    return cast("Figure", fig)


@draws("host_seed_cells")
def draw_host_seed_cells(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    labels = {_int(r, "x"): (str(r["label"]), bool(r["reference"])) for r in rows}
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 4.4), layout="constrained", dpi=DPI)
    for cell in sorted({_int(r, "cell") for r in rows}):
        mine = [r for r in rows if r["cell"] == cell]
        ax.plot(
            [_num(r, "x") + _num(r, "offset") for r in mine],
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
    width = max(6, int(64 / max(1, len(xs))))
    ax.set_xticks(
        xs,
        [_wrap(labels[x][0], width) + ("\n(reference)" if labels[x][1] else "") for x in xs],
        fontsize=TEXT_PT,
    )
    ax.set_xlabel("condition")
    ax.set_ylabel("val_bpb (bits per byte)")
    ax.set_title(_wrap(data.title, 70))
    _legend_below(fig, ax, ncol=4)
    return cast("Figure", fig)


@draws("cost_quality")
def draw_cost_quality(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 5.6), layout="constrained", dpi=DPI)
    labels = []
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
            labels.append(
                ax.annotate(
                    r["label"],
                    (r["params_M"], r["mean_val_bpb"]),
                    fontsize=TEXT_PT,
                    xytext=(5, 4),
                    textcoords="offset points",
                    annotation_clip=False,
                )
            )
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel(_wrap("mean val_bpb (bits per byte, lower is better)", 30))
    ax.set_title(_wrap(data.title, 70))
    ax.margins(x=0.18, y=0.15)  # room for the labels beside the outermost bubbles
    _legend_below(fig, ax, ncol=2, markerscale=0.4)
    _spread(fig, labels)
    return cast("Figure", fig)


@draws("budget")
def draw_budget(data: FigureData) -> Figure:
    plt = _plt()
    stages = [r for r in data.table.rows if r["panel"] == "stage"]
    counter = [r for r in data.table.rows if r["panel"] == "counterfactual"]
    panels = 2 if counter else 1
    # Panels stacked, not side by side: each keeps the page's width at 800 px.
    fig, axes = plt.subplots(
        panels,
        1,
        figsize=(FIG_WIDTH, 4.2 * panels + 0.6),
        squeeze=False,
        layout="constrained",
        dpi=DPI,
    )
    unit = data.title.split(" per stage")[0].split(": ")[0]
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
            ax.text(x - 0.2, 0, "pending", rotation=90, ha="center", va="bottom", fontsize=TEXT_PT)
    ax.set_xticks(
        xs,
        [r["label"] for r in stages],
        rotation=30 if len(xs) > 4 else 0,
        ha="right" if len(xs) > 4 else "center",
    )
    ax.set_xlabel("stage")
    ax.set_ylabel(unit)
    ax.set_title("Per stage")
    ax.legend(frameon=False)
    if counter:
        ax2 = axes[1, 0]
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
        texts = [
            ax2.text(r["total_gpu_hours"], y, f" {r['total_gpu_hours']:.4g}", va="center")
            for y, r in zip(ys, counter, strict=True)
        ]
        ax2.set_yticks(ys, [_wrap(str(r["label"]), 28) for r in counter], fontsize=TEXT_PT)
        ax2.set_xlabel(f"{unit} of the final confirmation")
        ax2.set_title("Continue-all counterfactuals")
        _legend_below(fig, ax2, ncol=2)
        _fit_right(fig, ax2, texts)
    fig.suptitle(_wrap(data.title, 70), fontsize=11)
    return cast("Figure", fig)


@draws("learning_curves")
def draw_learning_curves(data: FigureData) -> Figure:
    plt = _plt()
    rows = data.table.rows
    fig, axes = plt.subplots(
        2, 1, figsize=(FIG_WIDTH, 7.6), squeeze=False, layout="constrained", dpi=DPI
    )
    xlabels = {"training_seconds": "training seconds", "tokens": "tokens (millions)"}
    scale = {"training_seconds": 1.0, "tokens": 1e-6}
    for ax, axis in zip(axes[:, 0], ("training_seconds", "tokens"), strict=True):
        for cid in dict.fromkeys(r["condition_id"] for r in rows):
            mine = [r for r in rows if r["condition_id"] == cid and r["axis"] == axis]
            if not mine:
                continue
            xs = [_num(r, "x") * scale[axis] for r in mine]
            first = mine[0]
            ax.plot(
                xs,
                [r["mean_loss"] for r in mine],
                color=first["color"],
                linestyle=first["linestyle"],
                linewidth=1.3,
                label=f"{first['label']} ({first['cells']} cells)",
            )
            if _num(first, "cells") > 1:
                ax.fill_between(
                    xs,
                    [r["low_loss"] for r in mine],
                    [r["high_loss"] for r in mine],
                    color=first["color"],
                    alpha=0.18,
                    linewidth=0,
                )
        ax.set_xlabel(xlabels[axis])
        ax.set_ylabel(_wrap("train loss (nats per token, smoothed)", 24))
    _legend_below(fig, axes[0, 0], ncol=3)
    fig.suptitle(_wrap(data.title, 70), fontsize=11)
    return cast("Figure", fig)
