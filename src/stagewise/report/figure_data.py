"""The numbers behind every figure, computed by pure functions (no matplotlib here).

Each figure of the report is drawn from one `FigureData`: a table that the report also writes
beside the picture (`figures/<name>.csv` and `.json`), a title that says no more than the data
shows, and the section of the report it belongs to. The drawing code in `figures.py` only maps
these rows to marks, so what a figure shows is tested by number here (as optuna's
`visualization/` splits `_get_*_info` from plotting).

Learning curves are the one figure that reads files: `load_curves` reads each run's
`train_loss.csv` (I/O), and `learning_curve_rows` turns the curves into the smoothed means and
bands that are drawn (pure).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.budget_units import format_duration
from stagewise.ledger import RunKey
from stagewise.report.context import GateView, ReportContext
from stagewise.report.published import PUBLISHED_LABEL, as_float
from stagewise.report.tables import Table

# Okabe & Ito (2008), the colour-blind-safe palette; black last.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
STAGE_COLOR, GATE_COLOR, PENDING_COLOR = OKABE_ITO[0], OKABE_ITO[1], "#999999"
EXECUTED_COLOR, ADDED_COLOR = OKABE_ITO[0], OKABE_ITO[5]

# The runner's per-step loss log (`stagewise.runner.loop.LOSS_LOG`); named here too because
# importing the runner would load torch into every report.
LOSS_LOG = "train_loss.csv"
# The runner does not count its first steps (compile, warm-up), at most this many
# (`stagewise.runner.loop.MAX_UNTIMED_STEPS`); its summary says how many (`untimed_steps`).
UNTIMED_STEPS = 10
# The same smoothing as the runner's printed loss, bias-corrected so the first steps are not
# pulled towards zero.
SMOOTH_BETA = 0.9
# Points on the common x grid over which a condition's cells are averaged.
CURVE_POINTS = 50
CURVE_AXES = ("training_seconds", "tokens")


@dataclass(frozen=True)
class FigureData:
    """One figure's numbers: `table` is what is drawn, written beside the PNG/SVG."""

    name: str  # file stem under figures/
    kind: str  # the drawing function that draws it (figures.py registry)
    section: str  # "outcome", "gate:<id>", "across", "curves", "budget"
    title: str
    caption: str
    sources: tuple[str, ...]
    table: Table


FigureFn = Callable[[ReportContext], "list[FigureData] | str"]
# name -> function returning the figures of that name family, or why there is nothing to draw
FIGURE_DATA: dict[str, FigureFn] = {}


def figure_data(name: str) -> Callable[[FigureFn], FigureFn]:
    def wrap(fn: FigureFn) -> FigureFn:
        FIGURE_DATA[name] = fn
        return fn

    return wrap


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def condition_style(ctx: ReportContext, condition_id: str) -> dict[str, str]:
    """One colour/marker/linestyle per condition, the same in every figure (matrix order)."""
    ids = ctx.study.condition_ids
    i = ids.index(condition_id) if condition_id in ids else len(ids)
    return {
        "color": color(i),
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
    }


def budget_label(ctx: ReportContext, stages: Sequence[str]) -> str:
    """The budget of the last of `stages` in study order, in its own unit ('10m', '50Mtok')."""
    order = list(ctx.study.stages)
    last = max(stages, key=lambda s: order.index(s) if s in order else -1)
    stage = ctx.study.stages[last]
    budget = getattr(stage, "budget", None)
    return str(budget) if budget is not None else format_duration(stage.budget_seconds)


def as_dict(result: Any) -> dict[str, Any] | None:
    """A gate/sensitivity/budget result as its JSON object (typed results serialise themselves)."""
    if result is None:
        return None
    if isinstance(result, Mapping):
        return dict(result)
    to_json = getattr(result, "to_json", None)
    if callable(to_json):
        value = to_json()
        return dict(json.loads(value) if isinstance(value, str) else value)
    raise TypeError(f"not a result object: {type(result).__name__}")


def _table(name: str, title: str, columns: Sequence[str], rows: list[dict[str, Any]]) -> Table:
    return Table(name, title, list(columns), rows, note=f"the numbers drawn in figures/{name}.png")


# --------------------------------------------------------------------------- funnel


@figure_data("funnel")
def funnel_data(ctx: ReportContext) -> list[FigureData] | str:
    """Candidates per stage, and after each gate's last stage what it promoted (or passed)."""
    gate_after: dict[str, list[GateView]] = {}
    for view in ctx.gates:
        gate_after.setdefault(view.gate.stages[-1], []).append(view)
    rows: list[dict[str, Any]] = []

    def add(
        bar: str, kind: str, stage: str, gate: str, count: int, pending: bool, manual: bool
    ) -> None:
        rows.append(
            {
                "order": len(rows),
                "bar": bar,
                "kind": kind,
                "stage": stage,
                "gate": gate,
                "count": count,
                "pending": pending,
                "manual": manual,
                "text": f"{count} (pending)"
                if pending and count
                else "pending"
                if pending
                else str(count),
                "color": PENDING_COLOR
                if pending
                else (STAGE_COLOR if kind == "stage" else GATE_COLOR),
            }
        )

    for st in ctx.plan_dict["stages"]:
        pending = st["candidates"] is None
        add(
            f"{st['stage']} ({st['budget']})",
            "stage",
            st["stage"],
            "",
            st["candidate_count"] or 0,
            pending,
            False,
        )
        for view in gate_after.get(st["stage"], []):
            result = as_dict(view.result)
            gid = view.gate_id
            if view.gate.kind == "confirm" and result is not None:
                passed = [c for c in result.get("conditions", []) if c.get("verdict") == "pass"]
                add(f"{gid}: passed", "gate", st["stage"], gid, len(passed), False, False)
            elif view.active is not None:
                manual = bool(view.active.manual)
                tag = " (manual)" if manual else ""
                add(
                    f"{gid}: promoted{tag}",
                    "gate",
                    st["stage"],
                    gid,
                    len(view.active.promoted),
                    False,
                    manual,
                )
            else:
                add(f"{gid}: pending", "gate", st["stage"], gid, 0, True, False)
    if not rows:
        return "no stages"
    columns = [
        "order",
        "bar",
        "kind",
        "stage",
        "gate",
        "count",
        "pending",
        "manual",
        "text",
        "color",
    ]
    pending = any(r["pending"] for r in rows)
    return [
        FigureData(
            "funnel",
            "funnel",
            "outcome",
            "Promotion funnel: stage candidates (blue), gate outcomes (orange)",
            "Candidates per stage in budget order, and after each gate's last stage the number it "
            "promoted (or passed)"
            + (
                "; grey hatched = pending (a pending stage shows the count its gate's rules "
                "fix, or at most that many)"
                if pending
                else ""
            )
            + ("; (manual) = decided outside the tool" if any(r["manual"] for r in rows) else "")
            + ".",
            ("tables/plan.csv", "tables/decisions.csv", "study/study.toml"),
            _table("funnel", "Promotion funnel", columns, rows),
        )
    ]


# --------------------------------------------------------------------------- gate series


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
        result = as_dict(view.result)
        if result is None:
            continue
        recomputed.add(view.gate_id)
        mean, params, tokens = {}, {}, {}
        for cond in result.get("conditions", []):
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
                    budget_label(ctx, stages),
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
                    budget_label(ctx, pub.stages),
                )
            )
    series.sort(key=lambda s: (s.budget_seconds, s.order))
    return series


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
                    "gap_from_best": s.mean[cid] - best,
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
        "color",
        "marker",
        "linestyle",
    ]
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
            + ".",
            ("tables/gate_*.csv", "tables/published_*.csv"),
            _table("gap_trajectory", "Gap from the best mean per gate", columns, rows),
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
            + ".",
            ("tables/gate_*.csv", "tables/published_*.csv"),
            _table("cost_quality", "Cost-quality points", columns, rows),
        )
    ]


# --------------------------------------------------------------------------- per gate


def condition_intervals(result: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Each condition's interval of its mean val_bpb, where the gate result carries one.

    Decision confidence (issue 13) adds `interval` per condition; a [low, high] pair or a
    mapping with a `mean_val_bpb` pair (or `low`/`high`) is understood.
    """
    out: dict[str, tuple[float, float]] = {}
    for cond in result.get("conditions", []):
        value = cond.get("interval")
        if isinstance(value, Mapping):
            value = value.get("mean_val_bpb", value.get("mean", value))
        if isinstance(value, Mapping):
            value = [value.get("low"), value.get("high")]
        if (
            isinstance(value, list | tuple)
            and len(value) == 2
            and all(isinstance(v, int | float) for v in value)
        ):
            out[str(cond.get("condition_id"))] = (float(value[0]), float(value[1]))
    return out


def interval_level(result: Mapping[str, Any]) -> float | None:
    """The confidence level of the conditions' intervals (e.g. 0.9), when the result says."""
    for cond in result.get("conditions", []):
        value = cond.get("interval")
        if isinstance(value, Mapping) and isinstance(value.get("confidence"), int | float):
            return float(value["confidence"])
    return None


def host_seed_rows(ctx: ReportContext, view: GateView) -> list[dict[str, Any]]:
    """One row per (condition, cell) of the gate, in matrix order, with where it is drawn."""
    conds = [c for c in ctx.study.condition_ids if any(x["condition_id"] == c for x in view.cells)]
    keys = sorted({(x["host"], x["seed"]) for x in view.cells})
    hosts = sorted({h for h, _ in keys})
    result = as_dict(view.result) or {}
    means = {
        c["condition_id"]: c.get("mean_val_bpb")
        for c in result.get("conditions", [])
        if c.get("condition_id")
    }
    intervals = condition_intervals(result)
    width = 0.6  # of one condition's slot, shared by its cells
    rows = []
    for x in view.cells:
        k = keys.index((x["host"], x["seed"]))
        cid = x["condition_id"]
        low, high = intervals.get(cid, (None, None))
        rows.append(
            {
                "gate": view.gate_id,
                "stage": x["stage"],
                "condition_id": cid,
                "label": ctx.label(cid),
                "reference": cid == ctx.study.reference,
                "x": conds.index(cid),
                "offset": (k - (len(keys) - 1) / 2) * width / max(1, len(keys)),
                "host": x["host"],
                "seed": x["seed"],
                "cell": k,
                "color": color(k),
                "marker": MARKERS[hosts.index(x["host"]) % len(MARKERS)],
                "val_bpb": x["val_bpb"],
                "mean_val_bpb": means.get(cid),
                "interval_low": low,
                "interval_high": high,
            }
        )
    rows.sort(key=lambda r: (r["x"], r["cell"]))
    return rows


HOST_SEED_COLUMNS = (
    "gate",
    "stage",
    "condition_id",
    "label",
    "reference",
    "x",
    "offset",
    "host",
    "seed",
    "cell",
    "color",
    "marker",
    "val_bpb",
    "mean_val_bpb",
    "interval_low",
    "interval_high",
)


@figure_data("host_seed_cells")
def host_seed_cells_data(ctx: ReportContext) -> list[FigureData] | str:
    out = []
    for view in ctx.gates:
        if not view.cells:
            continue
        rows = host_seed_rows(ctx, view)
        has_interval = any(r["interval_low"] is not None for r in rows)
        level = interval_level(as_dict(view.result) or {})
        what = f"its {level:.0%} interval" if level is not None else "its interval"
        has_ref = any(r["reference"] for r in rows)
        name = f"host_seed_cells_{view.gate_id}"
        out.append(
            FigureData(
                name,
                "host_seed_cells",
                f"gate:{view.gate_id}",
                f"Gate {view.gate_id}: val_bpb in each host-seed cell ({' + '.join(view.gate.stages)})",
                "Each condition's val_bpb in every host-seed cell of the gate (marker = host "
                "block, colour = cell); the black bar is the condition's mean"
                + (f" and the vertical line {what}" if has_interval else "")
                + ("; the reference is shaded" if has_ref else "")
                + ".",
                ("results/runs.csv", "study/study.toml"),
                _table(name, f"Gate {view.gate_id}: host-seed cells", HOST_SEED_COLUMNS, rows),
            )
        )
    return out or "no gate has recorded cells yet"


# --------------------------------------------------------------------------- budget

BUDGET_FIGURE_COLUMNS = (
    "panel",
    "label",
    "budgeted_gpu_hours",
    "recorded_gpu_hours",
    "executed_gpu_hours",
    "added_gpu_hours",
    "total_gpu_hours",
    "published",
)


def _f(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return as_float(str(value))


@figure_data("budget")
def budget_data(ctx: ReportContext) -> list[FigureData] | str:
    """GPU-hours per stage (budget result, else the plan) and the counterfactuals."""
    budget = as_dict(ctx.budget) or {}
    stages = budget.get("stages") or [
        {"stage": s["stage"], "budgeted_gpu_hours": s["budgeted_gpu_hours"]}
        for s in ctx.plan_dict["stages"]
    ]
    if not stages:
        return "no stages"
    rows: list[dict[str, Any]] = [
        {
            "panel": "stage",
            "label": s["stage"],
            "budgeted_gpu_hours": _f(s.get("budgeted_gpu_hours")),
            "recorded_gpu_hours": _f(s.get("recorded_gpu_hours")),
            "published": False,
        }
        for s in stages
    ]
    counter = [(c, False) for c in budget.get("counterfactuals") or []]
    if not counter:
        pub = next((p for p in ctx.published if p.kind == "budget"), None)
        if pub is not None:
            counter = [(dict(r), True) for r in pub.rows]
    for c, published in counter:
        total = _f(c.get("confirmation_gpu_hours")) or 0.0
        added = _f(c.get("added_vs_executed")) or 0.0
        rows.append(
            {
                "panel": "counterfactual",
                "label": str(c.get("scenario", "")),
                "executed_gpu_hours": total - added,
                "added_gpu_hours": added,
                "total_gpu_hours": total,
                "published": published,
            }
        )
    recorded = any(r.get("recorded_gpu_hours") for r in rows if r["panel"] == "stage")
    has_counter = any(r["panel"] == "counterfactual" for r in rows)
    published = any(r["published"] for r in rows)
    return [
        FigureData(
            "budget",
            "budget",
            "budget",
            "GPU-hours per stage: budgeted"
            + (" and recorded" if recorded else " (no training time recorded)")
            + ("; continue-all counterfactuals" if has_counter else ""),
            "Budgeted GPU-hours per stage (candidates x seeds x hosts x budget)"
            + ("; recorded = summed training time of recorded runs" if recorded else "")
            + (
                "; the counterfactual bars: GPU-hours of the final confirmation if every "
                "candidate of a gate had continued (executed part + added part)"
                if has_counter
                else ""
            )
            + (f"; counterfactuals: {PUBLISHED_LABEL}" if published else "")
            + ".",
            ("tables/budget.csv", "tables/budget_counterfactuals.csv", "tables/plan.csv"),
            _table("budget", "Budget figure data", BUDGET_FIGURE_COLUMNS, rows),
        )
    ]


# --------------------------------------------------------------------------- learning curves


@dataclass(frozen=True)
class LossCurve:
    """One run's train loss per step, with the training seconds and tokens at each step."""

    steps: tuple[int, ...]
    loss: tuple[float, ...]
    seconds: tuple[float, ...]
    tokens: tuple[float, ...]


def read_loss_curve(
    path: Path,
    *,
    time_budget: float | None,
    batch_tokens: float | None,
    timed: tuple[float, int, int] | None = None,
) -> LossCurve | None:
    """A runner's `train_loss.csv` (step, progress, loss, ...) or None when there is none.

    With a wall-clock budget the runner logs progress = training seconds / budget at the start
    of each step (the untimed warm-up steps at 0), so seconds = progress x budget. A token or
    step budget makes progress count steps; then `timed` = (training seconds, steps, untimed
    steps) of the run spreads its training time evenly over the timed steps. Tokens = (step + 1) x tokens per
    optimizer step. Explicit `training_seconds`/`tokens` columns win where a trainer writes them.
    """
    if not path.is_file():
        return None
    steps, loss, seconds, tokens = [], [], [], []
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                step = int(row["step"])
                value = float(row["loss"])
            except (KeyError, TypeError, ValueError):
                continue
            if not math.isfinite(value):
                continue  # a diverged run's last line: nothing to draw
            sec = as_float(row.get("training_seconds"))
            if sec is None and time_budget:
                progress = as_float(row.get("progress"))
                sec = progress * time_budget if progress is not None else None
            elif sec is None and timed is not None:
                total, n, untimed = timed
                sec = total * min(1.0, max(0, step - untimed) / max(1, n - untimed))
            tok = as_float(row.get("tokens"))
            if tok is None and batch_tokens:
                tok = (step + 1) * batch_tokens
            if sec is None or tok is None:
                continue
            steps.append(step)
            loss.append(value)
            seconds.append(sec)
            tokens.append(tok)
    if not steps:
        return None
    return LossCurve(tuple(steps), tuple(loss), tuple(seconds), tuple(tokens))


def smooth(values: Sequence[float], beta: float = SMOOTH_BETA) -> list[float]:
    """Bias-corrected exponential moving average (the first value is returned unchanged)."""
    out, ema = [], 0.0
    for i, v in enumerate(values):
        ema = beta * ema + (1 - beta) * v
        out.append(ema / (1 - beta ** (i + 1)))
    return out


def _dedupe(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    """Strictly increasing x for interpolation; repeated x (untimed warm-up) keeps its last y."""
    ox: list[float] = []
    oy: list[float] = []
    for x, y in zip(xs, ys, strict=True):
        if ox and x <= ox[-1]:
            ox[-1], oy[-1] = max(ox[-1], x), y
        else:
            ox.append(x)
            oy.append(y)
    return ox, oy


def mean_band(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], points: int = CURVE_POINTS
) -> list[tuple[float, float, float, float]]:
    """(x, mean, low, high) of several (x, y) curves on the x range they all cover.

    The grid spans from the latest start to the earliest end, so every point averages every
    cell (no mean that silently drops a short run); each curve is interpolated linearly onto
    it; low/high are the lowest and highest cell.
    """
    import numpy as np

    prepared = [_dedupe(xs, ys) for xs, ys in curves if len(xs)]
    if not prepared:
        return []
    start = max(xs[0] for xs, _ in prepared)
    end = min(xs[-1] for xs, _ in prepared)
    if end < start:
        return []
    grid = np.array([start]) if end == start else np.linspace(start, end, points)
    values = np.array([np.interp(grid, xs, ys) for xs, ys in prepared])
    return [
        (float(x), float(m), float(lo), float(hi))
        for x, m, lo, hi in zip(
            grid, values.mean(axis=0), values.min(axis=0), values.max(axis=0), strict=True
        )
    ]


CURVE_COLUMNS = (
    "stage",
    "axis",
    "condition_id",
    "label",
    "color",
    "linestyle",
    "cells",
    "point",
    "x",
    "mean_loss",
    "low_loss",
    "high_loss",
)


def learning_curve_rows(
    ctx: ReportContext, stage: str, curves: Mapping[RunKey, LossCurve]
) -> list[dict[str, Any]]:
    """Smoothed train loss per condition of one stage, mean over cells with a min-max band."""
    rows: list[dict[str, Any]] = []
    for axis in CURVE_AXES:
        for cid in ctx.study.condition_ids:
            cells = [
                c for k, c in sorted(curves.items()) if k.stage == stage and k.condition_id == cid
            ]
            if not cells:
                continue
            band = mean_band(
                [
                    (c.seconds if axis == "training_seconds" else c.tokens, smooth(c.loss))
                    for c in cells
                ]
            )
            style = condition_style(ctx, cid)
            for i, (x, mean, low, high) in enumerate(band):
                rows.append(
                    {
                        "stage": stage,
                        "axis": axis,
                        "condition_id": cid,
                        "label": ctx.label(cid),
                        "color": style["color"],
                        "linestyle": style["linestyle"],
                        "cells": len(cells),
                        "point": i,
                        "x": x,
                        "mean_loss": mean,
                        "low_loss": low,
                        "high_loss": high,
                    }
                )
    return rows


def run_folder(ctx: ReportContext, key: RunKey) -> Path:
    # Lazy import keeps the report's import light; the executors own the run layout.
    from stagewise.executors.command import run_dir

    return run_dir(ctx.study, key.stage, key.condition_id, key.seed, key.host) / "out"


# The last context's curves: the figure and the report's list of runs without a curve read the
# same files once (a 12-hour run logs ~10^5 steps).
_CURVES_OF: list[tuple[ReportContext, tuple[dict[RunKey, LossCurve], list[dict[str, Any]]]]] = []


def load_curves(ctx: ReportContext) -> tuple[dict[RunKey, LossCurve], list[dict[str, Any]]]:
    """The loss curve of every succeeded run, and the runs that have none (with why)."""
    if _CURVES_OF and _CURVES_OF[0][0] is ctx:
        return _CURVES_OF[0][1]
    result = _load_curves(ctx)
    _CURVES_OF[:] = [(ctx, result)]
    return result


def _load_curves(ctx: ReportContext) -> tuple[dict[RunKey, LossCurve], list[dict[str, Any]]]:
    curves: dict[RunKey, LossCurve] = {}
    missing: list[dict[str, Any]] = []
    for rec in ctx.runs:
        if rec.status != "succeeded":
            continue
        summary: dict[str, Any] = {}
        if rec.summary_json:
            try:
                summary = dict(json.loads(rec.summary_json))
            except (ValueError, TypeError):
                summary = {}
        config = summary.get("config") if isinstance(summary.get("config"), dict) else {}
        assert isinstance(config, dict)
        stage = ctx.study.stages.get(rec.stage)
        counted = bool(
            config.get("token_budget") or config.get("step_budget") or config.get("deterministic")
        )
        if stage is not None and getattr(stage, "budget_spec", None) is not None:
            counted = True
        budget = None
        if not counted:
            budget = _f(config.get("time_budget")) or (stage.budget_seconds if stage else None)
        timed = None
        if rec.training_seconds is not None and rec.num_steps:
            untimed = summary.get("untimed_steps")
            timed = (
                float(rec.training_seconds),
                int(rec.num_steps),
                untimed if isinstance(untimed, int) else UNTIMED_STEPS,
            )
        batch = _f(config.get("total_batch_size")) or _f(ctx.study.runner.get("total_batch_size"))
        if batch is None:
            cond = next(
                (c for c in ctx.study.conditions if c.condition_id == rec.condition_id), None
            )
            batch = _f(cond.params.get("total_batch_size")) if cond else None
        curve = read_loss_curve(
            run_folder(ctx, rec.key) / LOSS_LOG, time_budget=budget, batch_tokens=batch, timed=timed
        )
        if curve is not None:
            curves[rec.key] = curve
            continue
        imported = (rec.source or "").startswith("import")
        missing.append(
            {
                "stage": rec.stage,
                "condition_id": rec.condition_id,
                "label": ctx.label(rec.condition_id),
                "seed": rec.seed,
                "host": rec.host,
                "source": rec.source or "",
                "why": "imported without a loss curve"
                if imported
                else f"no {LOSS_LOG} in its run folder",
            }
        )
    return curves, missing


@figure_data("learning_curves")
def learning_curves_data(ctx: ReportContext) -> list[FigureData] | str:
    curves, _ = load_curves(ctx)
    out = []
    for stage in ctx.study.stages:
        rows = learning_curve_rows(ctx, stage, curves)
        if not rows:
            continue
        name = f"learning_curves_{stage}"
        cells = {r["cells"] for r in rows}
        out.append(
            FigureData(
                name,
                "learning_curves",
                "curves",
                f"Stage {stage} ({budget_label(ctx, [stage])}): smoothed train loss",
                f"Train loss smoothed (EMA {SMOOTH_BETA:g}, bias-corrected) against training "
                "seconds and tokens; one line per condition"
                + (
                    ", the mean over its host-seed cells with a band from the lowest to the "
                    "highest cell"
                    if max(cells) > 1
                    else " (one cell each: no band)"
                )
                + "; the x range is the one every cell covers.",
                (f"runs/{stage}/*/*/out/{LOSS_LOG}",),
                _table(name, f"Learning curves of stage {stage}", CURVE_COLUMNS, rows),
            )
        )
    return out or "no run has a loss curve (train_loss.csv); imported runs carry none"
