"""The back-test's figures: the Pareto figure (cost against p_retain, one point per policy) and
decision accuracy against compute (one line per budget level).

`pareto_points` is the pure data function (tested by number and written as pareto.csv beside
the image); `draw_pareto` only draws those rows. Every policy keeps one colour across figures
and runs (`policy_colour`), and is labelled at its point. The cost axis is in the table's unit
(GPU-hours when seconds convert it). matplotlib is imported inside (Agg backend).
"""

from __future__ import annotations

import csv
import math
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stagewise.backtest.replay import BacktestResult

# Fixed colours for the default policy set (colour-blind-safe families: one hue per policy
# family, shades per parameter); anything else gets a colour from its label's hash.
POLICY_COLOURS = {
    "final_only": "#000000",
    "top_k:k=1": "#9ecae1",
    "top_k:k=2": "#4292c6",
    "top_k:k=3": "#08519c",
    "sh:eta=2": "#fdae6b",
    "sh:eta=3": "#e6550d",
    "hyperband:eta=3": "#31a354",
    "asha:eta=2": "#bcbddc",
    "asha:eta=3": "#756bb1",
    "asha-stop:eta=2": "#c994c7",
    "asha-stop:eta=3": "#ce1256",
    "study": "#d62728",
    "optuna-sh:eta=3": "#8c6d31",
    "optuna-hyperband:eta=3": "#bd9e39",
    "optuna-wilcoxon:p=0.1": "#17becf",
    "extrapolate:k=3;levels=3": "#7f7f7f",
    "recommended": "#ff7f0e",
}
_FALLBACK = (
    "#1f77b4",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#843c39",
    "#7b4173",
    "#5254a3",
    "#6b6ecf",
    "#b5cf6b",
    "#e7ba52",
    "#ad494a",
    "#a55194",
)


def policy_colour(label: str) -> str:
    """The colour of a policy label: the same in every figure and every run."""
    if label in POLICY_COLOURS:
        return POLICY_COLOURS[label]
    return _FALLBACK[zlib.crc32(label.encode()) % len(_FALLBACK)]


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    policy: str
    gpu_hours: float | None
    gpu_hours_low: float | None
    gpu_hours_high: float | None
    p_retain: float
    p_retain_low: float
    p_retain_high: float
    cost_vs_final_only: float
    on_front: bool  # no other policy retains at least as often for no more cost
    cost: float = math.nan  # in cost_unit
    cost_low: float = math.nan
    cost_high: float = math.nan
    cost_unit: str = "GPU-hours"
    colour: str = ""
    recommended: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pareto_points(
    result: BacktestResult, extra: list[dict[str, Any]] | None = None
) -> list[ParetoPoint]:
    """One point per policy (and per `extra` row, e.g. the recommended protocol)."""
    rows: list[dict[str, Any]] = []
    for pol in result.policies:
        hours = pol.gpu_hours_interval
        use_hours = pol.gpu_hours is not None and hours is not None
        rows.append(
            {
                "label": pol.label,
                "policy": pol.policy,
                "gpu_hours": pol.gpu_hours,
                "gpu_hours_low": hours.low if hours is not None else None,
                "gpu_hours_high": hours.high if hours is not None else None,
                "p_retain": pol.p_retain,
                "p_retain_low": pol.p_retain_interval.low,
                "p_retain_high": pol.p_retain_interval.high,
                "cost_vs_final_only": pol.cost_vs_final_only,
                "cost": pol.gpu_hours if use_hours else pol.cost,
                "cost_low": hours.low if use_hours and hours else pol.cost_interval.low,
                "cost_high": hours.high if use_hours and hours else pol.cost_interval.high,
                "recommended": False,
            }
        )
    rows.extend(extra or [])
    points = []
    for p in rows:
        dominated = any(
            q is not p
            and q["cost"] <= p["cost"]
            and q["p_retain"] >= p["p_retain"]
            and (q["cost"] < p["cost"] or q["p_retain"] > p["p_retain"])
            for q in rows
        )
        points.append(
            ParetoPoint(
                **{k: p[k] for k in p if k != "recommended"},
                on_front=not dominated,
                cost_unit=result.cost_unit,
                colour=policy_colour("recommended" if p.get("recommended") else p["label"]),
                recommended=bool(p.get("recommended")),
            )
        )
    return sorted(points, key=lambda x: (x.cost, -x.p_retain, x.label))


def write_pareto_csv(points: list[ParetoPoint], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        fields = list(ParetoPoint.__dataclass_fields__)
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for point in points:
            writer.writerow(point.to_json())
    return path


def cost_axis_label(unit: str, model: str) -> str:
    what = "GPU-hours" if unit == "GPU-hours" else f"{unit} of training"
    return f"{what} per decision ({model} cost model)"


def draw_pareto(
    points: list[ParetoPoint], path: Path, *, title: str = "", cost_model: str = "restart"
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 5.0), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    front = [p for p in points if p.on_front]
    if len(front) > 1:
        ax.plot(
            [p.cost for p in front],
            [p.p_retain for p in front],
            color="#999999",
            linewidth=1,
            zorder=1,
        )
    for i, p in enumerate(points):
        colour = p.colour or policy_colour(p.label)
        ax.errorbar(
            p.cost,
            p.p_retain,
            xerr=[[max(0.0, p.cost - p.cost_low)], [max(0.0, p.cost_high - p.cost)]],
            yerr=[
                [max(0.0, p.p_retain - p.p_retain_low)],
                [max(0.0, p.p_retain_high - p.p_retain)],
            ],
            fmt="*" if p.recommended else "o",
            color=colour,
            markerfacecolor=colour if p.on_front or p.recommended else "white",
            markersize=13 if p.recommended else 6,
            capsize=3,
            zorder=3 if p.recommended else 2,
        )
        # Labels alternate above and below so neighbours do not print over each other.
        ax.annotate(
            p.label,
            (p.cost, p.p_retain),
            xytext=(5, 6 if i % 2 == 0 else -11),
            textcoords="offset points",
            fontsize=7,
            color=colour,
        )
    ax.axhline(0.9, color="#bbbbbb", linestyle=":", linewidth=1)
    unit = points[0].cost_unit if points else "GPU-hours"
    ax.set_xlabel(cost_axis_label(unit, cost_model))
    ax.set_ylabel("p_retain (long-horizon best reaches the final level)")
    ax.set_ylim(-0.03, 1.08)
    ax.set_title(
        title or "Back-test: cost against keeping the long-horizon best (hollow: dominated)",
        fontsize=10,
    )
    ax.grid(alpha=0.25)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None} if path.suffix == ".png" else None)
    return path


def draw_decision_accuracy(evidence: dict[str, Any], path: Path) -> Path:
    """Decision accuracy against compute (fraction of final-only), one line per level."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    levels = evidence.get("levels", [])
    cmap = colormaps["viridis"]
    unit = evidence.get("budget_unit", "seconds")
    for i, row in enumerate(levels):
        pts = row.get("by_cells", [])
        colour = cmap(i / max(1, len(levels) - 1))
        budget = row["budget"]
        name = f"{budget:g}s" if unit == "seconds" else f"{budget:g} {unit}"
        ax.plot(
            [p["compute_fraction"] for p in pts],
            [p["decision_accuracy"] for p in pts],
            marker="o",
            markersize=4,
            color=colour,
            label=f"level {name}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("compute, as a fraction of final-only (every condition, every cell)")
    ax.set_ylabel("decision accuracy (pairs ordered as at the final level)")
    ax.set_ylim(0.0, 1.03)
    ax.axhline(0.5, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.set_title("Decision accuracy against compute, one line per budget level", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None} if path.suffix == ".png" else None)
    return path


__all__ = [
    "POLICY_COLOURS",
    "ParetoPoint",
    "draw_decision_accuracy",
    "draw_pareto",
    "pareto_points",
    "policy_colour",
    "write_pareto_csv",
]
