"""`stagewise curves --from-wandb PATH`: a Weights & Biases history export.

PATH is one file (CSV, JSON lines or Parquet) or a folder of them. A file holds one run (its
name, without the suffix, is the run id) or several, told apart by a run column (`run_id`,
`run`, `id` or `name`, the first present). Rows are W&B history rows with `_step`, `_runtime`
(seconds since the run started) and `_timestamp`; a row without the metric is skipped (W&B
rows are sparse). A run's keys are the columns that hold one value over the whole run (e.g.
config columns written beside the history) and, when present, `<file stem>.config.json` (a
run's `run.config`, plain or in W&B's `{"key": {"value": ...}}` form).

Export a live project with `wandb.Api().runs(...)` and `run.scan_history()` (every row; not
`run.history()`, which returns a 500-row sample that changes between calls); see
docs/backtest.md. Reading these files needs only pandas and pyarrow, both in the base install.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stagewise.backtest.table import CurvesError
from stagewise.backtest.trackers.history import Point, RunHistory

SUFFIXES = (".csv", ".jsonl", ".json", ".parquet", ".pq")
RUN_COLUMNS = ("run_id", "run", "id", "name")


def _read(path: Path) -> Any:
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=True)
        return pd.read_parquet(path)
    except Exception as exc:
        raise CurvesError(f"--from-wandb {path}: not a readable export ({exc})") from None


def _config(path: Path) -> dict[str, str]:
    side = path.with_name(path.stem + ".config.json")
    if not side.is_file():
        return {}
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CurvesError(f"{side}: not a JSON object of config values ({exc})") from None
    out = {}
    for key, value in raw.items():
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        out[str(key)] = _text(value)
    return out


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _runs_of(path: Path, frame: Any, metric: str) -> list[RunHistory]:
    if "_step" not in frame.columns:
        raise CurvesError(f"--from-wandb {path}: no _step column; expected a W&B history export")
    if metric not in frame.columns:
        known = ", ".join(c for c in frame.columns if not c.startswith("_"))
        raise CurvesError(f"--from-wandb {path}: no column {metric!r}; columns: {known}")
    run_col = next((c for c in RUN_COLUMNS if c in frame.columns), None)
    groups = (
        [(str(rid), part) for rid, part in frame.groupby(run_col, sort=True)]
        if run_col
        else [(path.stem, frame)]
    )
    side = _config(path)
    out = []
    for run_id, part in groups:
        params = dict(side)
        for column in part.columns:
            if column.startswith("_") or column in (metric, run_col):
                continue
            values = part[column].dropna().unique()
            if len(values) == 1:
                params[str(column)] = _text(
                    values[0].item() if hasattr(values[0], "item") else values[0]
                )
        rows = part[part[metric].notna()]
        points = []
        for step, value, runtime in zip(
            rows["_step"],
            rows[metric],
            rows["_runtime"] if "_runtime" in rows.columns else [None] * len(rows),
            strict=True,
        ):
            elapsed = (
                None
                if runtime is None or (isinstance(runtime, float) and math.isnan(runtime))
                else float(runtime)
            )
            points.append(Point(float(step), float(value), elapsed))
        if points:
            out.append(RunHistory(run_id, params, tuple(points), None, f"wandb {path}"))
    return out


def read_wandb(path: Path, metric: str) -> list[RunHistory]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.suffix.lower() in SUFFIXES and not p.name.endswith(".config.json")
        )
        if not files:
            raise CurvesError(
                f"--from-wandb {path}: no export file ({', '.join(SUFFIXES)}) in the folder"
            )
    elif path.is_file():
        files = [path]
    else:
        raise CurvesError(f"--from-wandb {path}: no such file or folder")
    out: list[RunHistory] = []
    for file in files:
        out.extend(_runs_of(file, _read(file), metric))
    return out


__all__ = ["read_wandb"]
