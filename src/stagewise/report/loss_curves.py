"""Training-loss curves: each run's `train_loss.csv` read, smoothed and averaged over cells.

`load_curves` reads the log of every succeeded run (I/O, once per report context);
`read_loss_curve`, `smooth` and `mean_band` are the pure steps the learning-curve figure
(`training_figures.py`), the report's list of runs without a curve (`html.py`) and the MLflow
export (`export/mlflow.py`) share.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.ledger import RunKey
from stagewise.paths import run_out_dir
from stagewise.report.context import ReportContext
from stagewise.report.figure_base import as_number
from stagewise.report.published import as_float

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


def run_folder(ctx: ReportContext, key: RunKey) -> Path:
    return run_out_dir(ctx.study.root, key.stage, key.condition_id, key.seed, key.host)


@dataclass(frozen=True)
class MissingCurve:
    """A succeeded run without a loss curve, and why."""

    stage: str
    condition_id: str
    label: str
    seed: int
    host: str
    source: str
    why: str

    def row(self) -> dict[str, str | int]:
        """The run's row of the report's table of runs without a curve."""
        return {
            "stage": self.stage,
            "condition_id": self.condition_id,
            "label": self.label,
            "seed": self.seed,
            "host": self.host,
            "source": self.source,
            "why": self.why,
        }


# The last context's curves: the figure and the report's list of runs without a curve read the
# same files once (a 12-hour run logs ~10^5 steps).
_CURVES_OF: list[tuple[ReportContext, tuple[dict[RunKey, LossCurve], list[MissingCurve]]]] = []


def load_curves(ctx: ReportContext) -> tuple[dict[RunKey, LossCurve], list[MissingCurve]]:
    """The loss curve of every succeeded run, and the runs that have none (with why)."""
    if _CURVES_OF and _CURVES_OF[0][0] is ctx:
        return _CURVES_OF[0][1]
    result = _load_curves(ctx)
    _CURVES_OF[:] = [(ctx, result)]
    return result


def _load_curves(ctx: ReportContext) -> tuple[dict[RunKey, LossCurve], list[MissingCurve]]:
    curves: dict[RunKey, LossCurve] = {}
    missing: list[MissingCurve] = []
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
            budget = as_number(config.get("time_budget")) or (
                stage.budget_seconds if stage else None
            )
        timed = None
        if rec.training_seconds is not None and rec.num_steps:
            untimed = summary.get("untimed_steps")
            timed = (
                float(rec.training_seconds),
                int(rec.num_steps),
                untimed if isinstance(untimed, int) else UNTIMED_STEPS,
            )
        batch = as_number(config.get("total_batch_size")) or as_number(
            ctx.study.runner.get("total_batch_size")
        )
        if batch is None:
            cond = next(
                (c for c in ctx.study.conditions if c.condition_id == rec.condition_id), None
            )
            batch = as_number(cond.params.get("total_batch_size")) if cond else None
        curve = read_loss_curve(
            run_folder(ctx, rec.key) / LOSS_LOG, time_budget=budget, batch_tokens=batch, timed=timed
        )
        if curve is not None:
            curves[rec.key] = curve
            continue
        imported = (rec.source or "").startswith("import")
        missing.append(
            MissingCurve(
                rec.stage,
                rec.condition_id,
                ctx.label(rec.condition_id),
                rec.seed,
                rec.host,
                rec.source or "",
                "imported without a loss curve" if imported else f"no {LOSS_LOG} in its run folder",
            )
        )
    return curves, missing
