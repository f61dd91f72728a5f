"""The ground-truth table ("curves"): final val_bpb of every condition at every budget level.

The format is a contract: `condition_id, budget_seconds, seed, host, val_bpb`, plus the optional
`training_seconds, tokens_M, num_params_M, label, role`, as CSV or Parquet. Reading validates
every row and refuses a bad one with one line naming the file, the row, the column, the value and
what was expected; nothing downstream ever sees a half-valid table.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stagewise.errors import StagewiseError

REQUIRED = ("condition_id", "budget_seconds", "seed", "host", "val_bpb")
OPTIONAL = ("training_seconds", "tokens_M", "num_params_M", "label", "role")
COLUMNS = REQUIRED + OPTIONAL
_NUMERIC_OPTIONAL = ("training_seconds", "tokens_M", "num_params_M")


class CurvesError(StagewiseError):
    """A curves table (or a back-test request over it) is unusable; the message says why."""


@dataclass(frozen=True)
class CurveRow:
    condition_id: str
    budget_seconds: float
    seed: int
    host: str
    val_bpb: float
    training_seconds: float | None = None
    tokens_M: float | None = None
    num_params_M: float | None = None
    label: str | None = None
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


@dataclass(frozen=True)
class Level:
    """One budget level as an array: values[c, h, s] (NaN where a cell lacks the condition)."""

    budget_seconds: float
    values: npt.NDArray[np.float64]

    @property
    def complete(self) -> npt.NDArray[np.bool_]:
        """available[h, s]: cells in which every condition has a value (the usable cells)."""
        return np.asarray(np.isfinite(self.values).all(axis=0), dtype=bool)

    @property
    def n_cells(self) -> int:
        return int(self.complete.sum())


@dataclass(frozen=True)
class CurvesTable:
    """A validated table with its dense view: conditions x levels x hosts x seeds."""

    source: str
    rows: tuple[CurveRow, ...]
    conditions: tuple[str, ...]
    budgets: tuple[float, ...]  # ascending
    hosts: tuple[str, ...]
    seeds: tuple[int, ...]
    levels: tuple[Level, ...]

    @property
    def final(self) -> Level:
        return self.levels[-1]

    def true_means(self) -> npt.NDArray[np.float64]:
        """Mean val_bpb of each condition over every usable cell of the final level."""
        final = self.final
        mask = final.complete
        return np.asarray(final.values[:, mask].mean(axis=1), dtype=np.float64)

    def truth(self) -> int:
        """Index of the long-horizon best: best mean at the final level (ties: condition_id)."""
        means = self.true_means()
        order = sorted(range(len(self.conditions)), key=lambda i: (means[i], self.conditions[i]))
        return order[0]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "conditions": len(self.conditions),
            "budgets_seconds": list(self.budgets),
            "hosts": list(self.hosts),
            "seeds": list(self.seeds),
            "cells_per_level": [lv.n_cells for lv in self.levels],
        }


def _where(source: str, line: int) -> str:
    return f"{source} row {line}"


def _number(source: str, line: int, column: str, text: Any, *, positive: bool = False) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise CurvesError(
            f"{_where(source, line)}: {column} must be a number, but got {text!r}"
        ) from None
    if not math.isfinite(value) or (positive and value <= 0):
        what = "a positive, finite number" if positive else "a finite number"
        raise CurvesError(f"{_where(source, line)}: {column} must be {what}, but got {text!r}")
    return value


def _text(source: str, line: int, column: str, value: Any) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise CurvesError(f"{_where(source, line)}: {column} is empty; expected a name")
    return text


def _optional(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def parse_rows(
    records: Iterable[dict[str, Any]], source: str, *, first_line: int = 2
) -> list[CurveRow]:
    """Validate raw records (one dict per row) into CurveRows; one-line errors name the row."""
    rows: list[CurveRow] = []
    seen: dict[tuple[str, float, int, str], int] = {}
    for line, record in enumerate(records, start=first_line):
        cid = _text(source, line, "condition_id", record.get("condition_id"))
        budget = _number(
            source, line, "budget_seconds", record.get("budget_seconds"), positive=True
        )
        seed_value = _number(source, line, "seed", record.get("seed"))
        if not seed_value.is_integer():
            raise CurvesError(
                f"{_where(source, line)}: seed must be an integer, but got {record.get('seed')!r}"
            )
        host = _text(source, line, "host", record.get("host"))
        val = _number(source, line, "val_bpb", record.get("val_bpb"), positive=True)
        extra: dict[str, Any] = {}
        for column in _NUMERIC_OPTIONAL:
            raw = _optional(record.get(column))
            extra[column] = None if raw is None else _number(source, line, column, raw)
        for column in ("label", "role"):
            extra[column] = _optional(record.get(column))
        key = (cid, budget, int(seed_value), host)
        if key in seen:
            raise CurvesError(
                f"{_where(source, line)}: duplicate of row {seen[key]} (condition_id={cid}, "
                f"budget_seconds={budget:g}, seed={int(seed_value)}, host={host}); expected one "
                "value per condition, budget, seed and host"
            )
        seen[key] = line
        rows.append(CurveRow(cid, budget, int(seed_value), host, val, **extra))
    return rows


def build_table(rows: Sequence[CurveRow], source: str) -> CurvesTable:
    """The dense view of validated rows; refuses tables a back-test cannot use."""
    if not rows:
        raise CurvesError(f"{source}: no rows; expected columns {', '.join(REQUIRED)}")
    first_seen: dict[str, None] = {}
    for r in rows:
        first_seen.setdefault(r.condition_id, None)
    conditions = tuple(first_seen)
    budgets = tuple(sorted({r.budget_seconds for r in rows}))
    hosts = tuple(sorted({r.host for r in rows}))
    seeds = tuple(sorted({r.seed for r in rows}))
    if len(conditions) < 2:
        raise CurvesError(f"{source}: {len(conditions)} condition(s); a back-test needs at least 2")
    c_index = {c: i for i, c in enumerate(conditions)}
    b_index = {b: i for i, b in enumerate(budgets)}
    h_index = {h: i for i, h in enumerate(hosts)}
    s_index = {s: i for i, s in enumerate(seeds)}
    dense = np.full((len(budgets), len(conditions), len(hosts), len(seeds)), np.nan)
    for r in rows:
        dense[
            b_index[r.budget_seconds], c_index[r.condition_id], h_index[r.host], s_index[r.seed]
        ] = r.val_bpb
    levels = []
    for li, budget in enumerate(budgets):
        level = Level(budget, dense[li])
        if level.n_cells == 0:
            have = np.isfinite(dense[li]).any(axis=(1, 2))
            missing = [conditions[i] for i in range(len(conditions)) if not have[i]]
            detail = (
                f"no value for {', '.join(missing[:3])}"
                if missing
                else "no seed-host cell holds every condition"
            )
            raise CurvesError(
                f"{source}: budget_seconds={budget:g} has no usable cell ({detail}); expected every "
                "condition at every budget level on at least one common seed and host"
            )
        levels.append(level)
    return CurvesTable(source, tuple(rows), conditions, budgets, hosts, seeds, tuple(levels))


def read_curves(path: Path | str) -> CurvesTable:
    """Read and validate a CSV or Parquet curves table."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise CurvesError(f"{source}: no such file; expected a CSV or Parquet curves table")
    records: list[dict[str, Any]]
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:  # pragma: no cover - pyarrow is a dependency of the data layer
            raise CurvesError(
                f"{source}: reading Parquet needs pyarrow (pip install pyarrow)"
            ) from None
        try:
            records = pq.read_table(path).to_pylist()
        except Exception as exc:
            raise CurvesError(f"{source}: not a readable Parquet file ({exc})") from None
        columns = list(records[0]) if records else []
    else:
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                columns = list(reader.fieldnames or [])
                records = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CurvesError(f"{source}: not a readable UTF-8 CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise CurvesError(
            f"{source}: missing column(s) {', '.join(missing)}; expected {', '.join(REQUIRED)} "
            f"(+ optional {', '.join(OPTIONAL)}), but got {', '.join(columns) or 'none'}"
        )
    return build_table(parse_rows(records, source), source)


def write_curves(rows: Sequence[CurveRow], path: Path | str) -> Path:
    """Write rows as CSV (or Parquet by suffix), in a stable order; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: (r.budget_seconds, r.condition_id, r.host, r.seed))
    present = [c for c in OPTIONAL if any(getattr(r, c) is not None for r in ordered)]
    columns = list(REQUIRED) + present
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = {c: [getattr(r, c) for r in ordered] for c in columns}
        pq.write_table(pa.table(data), path)
        return path
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in ordered:
            writer.writerow(
                ["" if getattr(r, c) is None else _cell(getattr(r, c)) for c in columns]
            )
    tmp.replace(path)
    return path


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


__all__ = [
    "COLUMNS",
    "OPTIONAL",
    "REQUIRED",
    "CurveRow",
    "CurvesError",
    "CurvesTable",
    "Level",
    "build_table",
    "parse_rows",
    "read_curves",
    "write_curves",
]
