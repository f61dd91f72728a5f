"""The Pareto figure: GPU-hours against p_retain, one point per policy, with 95% interval bars.

`pareto_points` is the pure data function (tested by number and written as pareto.csv beside
the image); `draw_pareto` only draws those rows. matplotlib is imported inside (Agg backend).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stagewise.backtest.replay import BacktestResult

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D")


@dataclass(frozen=True)
class ParetoPoint:
    label: str
    policy: str
    gpu_hours: float
    gpu_hours_low: float
    gpu_hours_high: float
    p_retain: float
    p_retain_low: float
    p_retain_high: float
    cost_vs_final_only: float
    on_front: bool  # no other policy retains at least as often for no more GPU-hours

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def pareto_points(result: BacktestResult) -> list[ParetoPoint]:
    rows = result.policies
    points = []
    for p in rows:
        dominated = any(
            q is not p
            and q.gpu_hours <= p.gpu_hours
            and q.p_retain >= p.p_retain
            and (q.gpu_hours < p.gpu_hours or q.p_retain > p.p_retain)
            for q in rows
        )
        points.append(
            ParetoPoint(
                label=p.label,
                policy=p.policy,
                gpu_hours=p.gpu_hours,
                gpu_hours_low=p.gpu_hours_interval.low,
                gpu_hours_high=p.gpu_hours_interval.high,
                p_retain=p.p_retain,
                p_retain_low=p.p_retain_interval.low,
                p_retain_high=p.p_retain_interval.high,
                cost_vs_final_only=p.cost_vs_final_only,
                on_front=not dominated,
            )
        )
    return sorted(points, key=lambda x: (x.gpu_hours, -x.p_retain, x.label))


def write_pareto_csv(points: list[ParetoPoint], path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        fields = list(ParetoPoint.__dataclass_fields__)
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for point in points:
            writer.writerow(point.to_json())
    return path


def draw_pareto(points: list[ParetoPoint], path: Path, *, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.6), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    front = [p for p in points if p.on_front]
    if len(front) > 1:
        ax.plot(
            [p.gpu_hours for p in front],
            [p.p_retain for p in front],
            color="#999999",
            linewidth=1,
            zorder=1,
            label="Pareto front",
        )
    for i, p in enumerate(points):
        color = OKABE_ITO[i % len(OKABE_ITO)]
        ax.errorbar(
            p.gpu_hours,
            p.p_retain,
            xerr=[
                [max(0.0, p.gpu_hours - p.gpu_hours_low)],
                [max(0.0, p.gpu_hours_high - p.gpu_hours)],
            ],
            yerr=[
                [max(0.0, p.p_retain - p.p_retain_low)],
                [max(0.0, p.p_retain_high - p.p_retain)],
            ],
            fmt=MARKERS[(i // len(OKABE_ITO)) % len(MARKERS)],
            color=color,
            markerfacecolor=color if p.on_front else "white",
            markersize=6,
            capsize=3,
            label=p.label,
            zorder=2,
        )
    ax.axhline(0.9, color="#bbbbbb", linestyle=":", linewidth=1)
    ax.set_xlabel("GPU-hours per replay (restart semantics)")
    ax.set_ylabel("p_retain (long-horizon best reaches the final level)")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(
        title or "Back-test: cost against keeping the long-horizon best (hollow: dominated)",
        fontsize=10,
    )
    ax.grid(alpha=0.25)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None} if path.suffix == ".png" else None)
    return path


__all__ = ["ParetoPoint", "draw_pareto", "pareto_points", "write_pareto_csv"]
