"""The ground-truth table ("curves"): a metric of every condition at every budget level.

The format is a contract. Required: `condition_id`, one budget column (`budget_seconds`,
`budget_tokens` or `budget_steps`: the column's name is the table's budget unit), `seed` (any
safe id: an integer seed or a tracker's run id), `host`, and the value: `val_bpb`, or `value`
with a `metric` column naming what was measured (`val/loss`). Optional: `training_seconds,
tokens_M, num_params_M, label, role`, `curve_kind` (`within_run`: values at several budgets are
prefixes of one run, as every tracker import; `separate_runs`: one run per budget, as
`stagewise curves DIR` trains them) and `censored_after` (the budget after which the run stopped
early: pruned, crashed or killed by the original sweep). CSV or Parquet.

A table is **paired** when, at every level, some seed-host cell holds every condition (one seed
shared across conditions, as stagewise's own studies run), and **unpaired** otherwise (each run
belongs to one condition, as in a tracker history); a replay then draws each condition's runs
independently. Reading validates every row and refuses a bad one with one line naming the file,
the row, the column, the value and what was expected.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stagewise.errors import StagewiseError
from stagewise.paths import id_problem

BUDGET_COLUMNS = {"budget_seconds": "seconds", "budget_tokens": "tokens", "budget_steps": "steps"}
UNIT_COLUMN = {unit: column for column, unit in BUDGET_COLUMNS.items()}
CURVE_KINDS = ("within_run", "separate_runs")
REQUIRED = ("condition_id", "budget_seconds", "seed", "host", "val_bpb")
OPTIONAL = (
    "training_seconds",
    "tokens_M",
    "num_params_M",
    "label",
    "role",
    "metric",
    "curve_kind",
    "censored_after",
)
COLUMNS = REQUIRED + OPTIONAL
_NUMERIC_OPTIONAL = ("training_seconds", "tokens_M", "num_params_M", "censored_after")
DEFAULT_METRIC = "val_bpb"

Seed = int | str


class CurvesError(StagewiseError):
    """A curves table (or a back-test request over it) is unusable; the message says why."""


@dataclass(frozen=True)
class CurveRow:
    """One value: `condition_id` at `budget` (in the table's unit) on one seed (run) and host."""

    condition_id: str
    budget: float
    seed: Seed
    host: str
    value: float
    training_seconds: float | None = None
    tokens_M: float | None = None
    num_params_M: float | None = None
    label: str | None = None
    role: str | None = None
    curve_kind: str | None = None
    censored_after: float | None = None

    @property
    def budget_seconds(self) -> float:
        """The budget (named for the original, seconds-only format)."""
        return self.budget

    @property
    def val_bpb(self) -> float:
        """The value (named for the original, val_bpb-only format)."""
        return self.value


@dataclass(frozen=True)
class Level:
    """One budget level: values[c, h, m] (NaN where there is no value).

    Paired tables: m indexes the table's seeds, shared by every condition. Unpaired tables: m
    indexes the runs of condition c on host h (`CurvesTable.run_ids[c][h][m]`), the same slot
    at every level, so a replay can follow one run across levels.
    """

    budget: float
    values: npt.NDArray[np.float64]
    paired: bool = True

    @property
    def budget_seconds(self) -> float:
        return self.budget

    @property
    def complete(self) -> npt.NDArray[np.bool_]:
        """available[h, m] of a paired level: cells in which every condition has a value."""
        return np.asarray(np.isfinite(self.values).all(axis=0), dtype=bool)

    @property
    def available(self) -> npt.NDArray[np.bool_]:
        """available[c', h, m]: c' = 1 for a paired level (shared cells), else one per condition."""
        if self.paired:
            return self.complete[None]
        return np.asarray(np.isfinite(self.values), dtype=bool)

    @property
    def n_cells(self) -> int:
        """Cells a replay can draw at this level (unpaired: the fewest runs of any condition)."""
        return int(self.available.sum(axis=(1, 2)).min())


@dataclass(frozen=True)
class CurvesTable:
    """A validated table with its dense view: levels x conditions x hosts x seeds (or runs)."""

    source: str
    rows: tuple[CurveRow, ...]
    conditions: tuple[str, ...]
    budgets: tuple[float, ...]  # ascending, in `unit`
    hosts: tuple[str, ...]
    seeds: tuple[Seed, ...]  # every seed (run) id in the table
    levels: tuple[Level, ...]
    unit: str = "seconds"
    metric: str = DEFAULT_METRIC
    curve_kind: str = "separate_runs"
    paired: bool = True
    run_ids: tuple[tuple[tuple[Seed, ...], ...], ...] = ()  # [c][h] -> ids by slot (unpaired)
    censored_runs: int = 0

    @property
    def final(self) -> Level:
        return self.levels[-1]

    @property
    def budget_column(self) -> str:
        return UNIT_COLUMN[self.unit]

    def format_budget(self, budget: float) -> str:
        """`3000 steps`, `5e+07 tokens`, `300s`: a level as the table's unit says."""
        if self.unit == "seconds":
            return f"{budget:g}s"
        return f"{budget:g} {self.unit}"

    def true_means(self) -> npt.NDArray[np.float64]:
        """Mean value of each condition over every usable cell (or run) at the final level."""
        final = self.final
        if self.paired:
            mask = final.complete
            return np.asarray(final.values[:, mask].mean(axis=1), dtype=np.float64)
        flat = final.values.reshape(len(self.conditions), -1)
        return np.asarray(np.nanmean(flat, axis=1), dtype=np.float64)

    def truth(self) -> int:
        """Index of the long-horizon best: best mean at the final level (ties: condition_id)."""
        means = self.true_means()
        order = sorted(range(len(self.conditions)), key=lambda i: (means[i], self.conditions[i]))
        return order[0]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "conditions": len(self.conditions),
            "budgets_seconds": list(self.budgets),  # kept for old readers: see budget_unit
            "budgets": list(self.budgets),
            "budget_unit": self.unit,
            "metric": self.metric,
            "curve_kind": self.curve_kind,
            "pairing": "paired" if self.paired else "unpaired",
            "hosts": list(self.hosts),
            "seeds": list(self.seeds),
            "cells_per_level": [lv.n_cells for lv in self.levels],
            "censored_runs": self.censored_runs,
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


def _seed(source: str, line: int, value: Any) -> Seed:
    """An integer seed stays an integer; any other safe id (a tracker's run id) is a string."""
    if isinstance(value, bool):
        value = str(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    text = "" if value is None else str(value).strip()
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    problem = id_problem(text)
    if problem is not None:
        raise CurvesError(f"{_where(source, line)}: seed {problem}")
    return text


def seed_key(seed: Seed) -> tuple[int, int, str]:
    """Integers in numeric order first, then string ids in text order."""
    if isinstance(seed, int):
        return (0, seed, "")
    return (1, 0, seed)


def _optional(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def parse_rows(
    records: Iterable[dict[str, Any]],
    source: str,
    *,
    first_line: int = 2,
    budget_column: str = "budget_seconds",
    value_column: str = "val_bpb",
) -> list[CurveRow]:
    """Validate raw records (one dict per row) into CurveRows; one-line errors name the row."""
    rows: list[CurveRow] = []
    seen: dict[tuple[str, float, Seed, str], int] = {}
    for line, record in enumerate(records, start=first_line):
        cid = _text(source, line, "condition_id", record.get("condition_id"))
        budget = _number(source, line, budget_column, record.get(budget_column), positive=True)
        seed = _seed(source, line, record.get("seed"))
        host = _text(source, line, "host", record.get("host"))
        # bits per byte are positive; another metric (a loss, an error rate) may be any number
        val = _number(
            source, line, value_column, record.get(value_column), positive=value_column == "val_bpb"
        )
        extra: dict[str, Any] = {}
        for column in _NUMERIC_OPTIONAL:
            raw = _optional(record.get(column))
            extra[column] = None if raw is None else _number(source, line, column, raw)
        for column in ("label", "role", "curve_kind"):
            extra[column] = _optional(record.get(column))
        if extra["curve_kind"] is not None and extra["curve_kind"] not in CURVE_KINDS:
            raise CurvesError(
                f"{_where(source, line)}: curve_kind must be one of {', '.join(CURVE_KINDS)}, but "
                f"got {extra['curve_kind']!r}"
            )
        key = (cid, budget, seed, host)
        if key in seen:
            raise CurvesError(
                f"{_where(source, line)}: duplicate of row {seen[key]} (condition_id={cid}, "
                f"{budget_column}={budget:g}, seed={seed}, host={host}); expected one "
                "value per condition, budget, seed and host"
            )
        seen[key] = line
        rows.append(CurveRow(cid, budget, seed, host, val, **extra))
    return rows


def _curve_kind(rows: Sequence[CurveRow], source: str) -> str:
    kinds = {r.curve_kind for r in rows if r.curve_kind is not None}
    if len(kinds) > 1:
        raise CurvesError(
            f"{source}: curve_kind mixes {' and '.join(sorted(kinds))}; expected one kind per table"
        )
    return kinds.pop() if kinds else "separate_runs"


def build_table(
    rows: Sequence[CurveRow],
    source: str,
    *,
    unit: str = "seconds",
    metric: str = DEFAULT_METRIC,
    pairing: str | None = None,
) -> CurvesTable:
    """The dense view of validated rows; refuses tables a back-test cannot use.

    `pairing` None detects it: paired when every level has a cell holding every condition.
    """
    column = UNIT_COLUMN.get(unit)
    if column is None:
        raise CurvesError(f"{source}: budget unit {unit!r}; expected seconds, tokens or steps")
    if not rows:
        raise CurvesError(f"{source}: no rows; expected columns {', '.join(REQUIRED)}")
    curve_kind = _curve_kind(rows, source)
    first_seen: dict[str, None] = {}
    for r in rows:
        first_seen.setdefault(r.condition_id, None)
    # Conditions in a canonical order, so a table's result never depends on its row order.
    conditions = tuple(sorted(first_seen))
    budgets = tuple(sorted({r.budget for r in rows}))
    hosts = tuple(sorted({r.host for r in rows}))
    seeds = tuple(sorted({r.seed for r in rows}, key=seed_key))
    if len(conditions) < 2:
        raise CurvesError(f"{source}: {len(conditions)} condition(s); a back-test needs at least 2")
    c_index = {c: i for i, c in enumerate(conditions)}
    b_index = {b: i for i, b in enumerate(budgets)}
    h_index = {h: i for i, h in enumerate(hosts)}
    s_index = {s: i for i, s in enumerate(seeds)}
    for _li, budget in enumerate(budgets):
        have = {r.condition_id for r in rows if r.budget == budget}
        missing = [c for c in conditions if c not in have]
        if missing:
            raise CurvesError(
                f"{source}: {column}={budget:g} has no usable cell (no value for "
                f"{', '.join(missing[:3])}); expected every condition at every budget level"
            )
    dense = np.full((len(budgets), len(conditions), len(hosts), len(seeds)), np.nan)
    for r in rows:
        dense[b_index[r.budget], c_index[r.condition_id], h_index[r.host], s_index[r.seed]] = (
            r.value
        )
    complete = np.isfinite(dense).all(axis=1).any(axis=(1, 2))  # [level]
    if pairing is None:
        paired = bool(complete.all())
    elif pairing == "paired":
        paired = True
        if not complete.all():
            bad = budgets[int(np.flatnonzero(~complete)[0])]
            raise CurvesError(
                f"{source}: {column}={bad:g} has no seed-host cell that holds every condition; "
                "a paired back-test needs one (use --pairing auto or unpaired)"
            )
    else:
        paired = False
    censored = {(r.condition_id, r.host, r.seed) for r in rows if r.censored_after is not None}
    run_ids: tuple[tuple[tuple[Seed, ...], ...], ...] = ()
    if paired:
        levels = tuple(Level(b, dense[li], True) for li, b in enumerate(budgets))
    else:
        # Unpaired: each (condition, host) keeps its own runs, in slots shared by every level.
        ids: list[list[list[Seed]]] = [[[] for _ in hosts] for _ in conditions]
        has_run = np.isfinite(dense).any(axis=0)  # [c, h, s]
        for ci in range(len(conditions)):
            for hi in range(len(hosts)):
                ids[ci][hi] = [seeds[si] for si in np.flatnonzero(has_run[ci, hi])]
        slots = max(1, max(len(x) for per in ids for x in per))
        packed = np.full((len(budgets), len(conditions), len(hosts), slots), np.nan)
        for ci in range(len(conditions)):
            for hi in range(len(hosts)):
                cols = [s_index[s] for s in ids[ci][hi]]
                packed[:, ci, hi, : len(cols)] = dense[:, ci, hi, cols]
        levels = tuple(Level(b, packed[li], False) for li, b in enumerate(budgets))
        run_ids = tuple(tuple(tuple(x) for x in per) for per in ids)
    return CurvesTable(
        source,
        tuple(rows),
        conditions,
        budgets,
        hosts,
        seeds,
        levels,
        unit=unit,
        metric=metric,
        curve_kind=curve_kind,
        paired=paired,
        run_ids=run_ids,
        censored_runs=len(censored),
    )


def read_curves(path: Path | str, *, pairing: str | None = None) -> CurvesTable:
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
            arrow = pq.read_table(path)
        except Exception as exc:
            raise CurvesError(f"{source}: not a readable Parquet file ({exc})") from None
        records = arrow.to_pylist()
        columns = list(arrow.column_names)
    else:
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                columns = list(reader.fieldnames or [])
                records = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise CurvesError(f"{source}: not a readable UTF-8 CSV file ({exc})") from None
    budget_cols = [c for c in BUDGET_COLUMNS if c in columns]
    value_col = "val_bpb" if "val_bpb" in columns else ("value" if "value" in columns else None)
    missing = [c for c in ("condition_id", "seed", "host") if c not in columns]
    if not budget_cols:
        missing.insert(1, "budget_seconds")
    if value_col is None:
        missing.append("val_bpb")
    if missing or len(budget_cols) > 1:
        problem = (
            f"missing column(s) {', '.join(missing)}"
            if missing
            else f"two budget columns ({', '.join(budget_cols)})"
        )
        raise CurvesError(
            f"{source}: {problem}; expected condition_id, one of {', '.join(BUDGET_COLUMNS)}, "
            f"seed, host and val_bpb (or value + metric) (+ optional "
            f"{', '.join(c for c in OPTIONAL if c != 'metric')}), but got "
            f"{', '.join(columns) or 'none'}"
        )
    assert value_col is not None
    metric = DEFAULT_METRIC
    if value_col == "value":
        names = {str(r.get("metric")).strip() for r in records if _optional(r.get("metric"))}
        if len(names) > 1:
            raise CurvesError(
                f"{source}: column metric names {len(names)} metrics ({', '.join(sorted(names))}); "
                "expected one metric per table"
            )
        metric = names.pop() if names else "value"
    rows = parse_rows(records, source, budget_column=budget_cols[0], value_column=value_col)
    return build_table(
        rows, source, unit=BUDGET_COLUMNS[budget_cols[0]], metric=metric, pairing=pairing
    )


def write_curves(
    rows: Sequence[CurveRow],
    path: Path | str,
    *,
    unit: str = "seconds",
    metric: str = DEFAULT_METRIC,
) -> Path:
    """Write rows as CSV (or Parquet by suffix), in a stable order; returns the path.

    The budget column is named for `unit`; a metric other than val_bpb is written as `value`
    with a `metric` column, so the table says what it measured.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = sorted(rows, key=lambda r: (r.budget, r.condition_id, r.host, seed_key(r.seed)))
    fields = {
        "condition_id": "condition_id",
        UNIT_COLUMN[unit]: "budget",
        "seed": "seed",
        "host": "host",
        ("val_bpb" if metric == DEFAULT_METRIC else "value"): "value",
    }
    if metric != DEFAULT_METRIC:
        fields["metric"] = "metric"
    for c in OPTIONAL:
        if c != "metric" and any(getattr(r, c) is not None for r in ordered):
            fields[c] = c

    def get(r: CurveRow, attr: str) -> Any:
        return metric if attr == "metric" else getattr(r, attr)

    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = {c: [get(r, a) for r in ordered] for c, a in fields.items()}
        if any(isinstance(r.seed, str) for r in ordered):
            data["seed"] = [str(s) for s in data["seed"]]
        pq.write_table(pa.table(data), path)
        return path
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(fields))
        for r in ordered:
            writer.writerow(
                ["" if get(r, a) is None else _cell(get(r, a)) for a in fields.values()]
            )
    tmp.replace(path)
    return path


def _cell(value: Any) -> str:
    """Lossless and short: a whole number without a decimal point, any other float as the
    shortest text that reads back to the same float (a CSV gives the same back-test as Parquet)."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


__all__ = [
    "BUDGET_COLUMNS",
    "COLUMNS",
    "CURVE_KINDS",
    "DEFAULT_METRIC",
    "OPTIONAL",
    "REQUIRED",
    "CurveRow",
    "CurvesError",
    "CurvesTable",
    "Level",
    "Seed",
    "build_table",
    "parse_rows",
    "read_curves",
    "seed_key",
    "write_curves",
]
