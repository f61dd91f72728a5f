"""The candidate matrix: CSV (`label,condition_id,role,<runner params...>`) or TOML (`[[conditions]]`)."""

from __future__ import annotations

import csv
import io
import math
import tomllib
from pathlib import Path
from typing import Any

from stagewise.bounds import parse_problem, read_input_text
from stagewise.errors import StudyError
from stagewise.paths import case_collision, id_problem, visible
from stagewise.study.model import Condition, ParamValue

# Columns that describe a condition rather than configure the runner.
TEXT_COLUMNS = ("label", "condition_id", "role", "description", "notes")
# Runner options whose values are text; every other parameter must be a number.
TEXT_PARAMS = frozenset({"window_pattern", "device"})
REQUIRED_COLUMNS = ("label", "condition_id", "role")


def _number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _param(where: str, key: str, value: Any) -> ParamValue:
    if key in TEXT_PARAMS:
        return str(value)
    if isinstance(value, bool):
        raise StudyError(f"{where}: {key} must be a number, but got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(float(value)):
            raise StudyError(f"{where}: {key} must be a finite number, but got {value!r}")
        return value
    number = _number(str(value).strip())
    if number is None:
        raise StudyError(f"{where}: runner parameter {key} must be a number, but got {value!r}")
    return number


def _condition(where: str, row: dict[str, Any]) -> Condition:
    for key in TEXT_COLUMNS:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise StudyError(f"{where}: {key} must be text, but got {value!r}")
    for key in REQUIRED_COLUMNS:
        value = row.get(key)
        if value is None or not str(value).strip():
            raise StudyError(f"{where}: {key} is empty; every condition needs a {key}")
    # Checked as written, not trimmed: " c_b" is refused like any other unsafe id.
    cid = str(row["condition_id"])
    problem = id_problem(cid)
    if problem is not None:
        raise StudyError(f"{where}: condition_id: {problem}")
    params = {
        key: _param(where, key, value)
        for key, value in row.items()
        if key not in TEXT_COLUMNS and value is not None and str(value).strip() != ""
    }
    return Condition(
        condition_id=cid,
        # Free text, shown in terminals and figures: control characters escaped, never raw.
        label=visible(str(row["label"]).strip()),
        role=str(row["role"]).strip(),
        params=params,
        description=visible(str(row.get("description") or "").strip()),
    )


def load_matrix(path: Path) -> tuple[Condition, ...]:
    """Read and validate the matrix file; errors name the file, the row and the field."""
    if not path.is_file():
        raise StudyError(f"{path}: matrix file not found")
    if path.suffix.lower() == ".toml":
        conditions = _load_toml(path)
    else:
        conditions = _load_csv(path)
    if not conditions:
        raise StudyError(f"{path}: the matrix has no conditions")
    clash = case_collision(c.condition_id for c in conditions)
    if clash is not None:
        raise StudyError(
            f"{path}: condition_ids {clash[0]!r} and {clash[1]!r} differ only in case; they "
            "name the same folder on a case-insensitive file system: rename one"
        )
    seen: dict[str, str] = {}
    labels: dict[str, str] = {}
    for cond in conditions:
        if cond.condition_id in seen:
            raise StudyError(f"{path}: duplicate condition_id {cond.condition_id!r}")
        seen[cond.condition_id] = cond.label
        if cond.label in labels:
            raise StudyError(
                f"{path}: duplicate label {cond.label!r} "
                f"({labels[cond.label]} and {cond.condition_id})"
            )
        labels[cond.label] = cond.condition_id
    return tuple(conditions)


def _load_csv(path: Path) -> list[Condition]:
    text = read_input_text(path, StudyError, "utf-8-sig")
    try:
        return _csv_conditions(path, text)
    except csv.Error as exc:
        raise StudyError(f"{path}: cannot read the matrix: {parse_problem(exc) or exc}") from None


def _csv_conditions(path: Path, text: str) -> list[Condition]:
    # Newlines inside quoted fields stay in the value (splitting lines first would join them).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise StudyError(
            f"{path}: missing column(s) {', '.join(missing)}; expected "
            "label,condition_id,role,<runner params...>"
        )
    if len(set(header)) != len(header):
        raise StudyError(f"{path}: duplicate column names in the header {header}")
    out = []
    for line_no, row in enumerate(reader, start=2):
        if None in row:
            raise StudyError(f"{path}, line {line_no}: more fields than header columns")
        if not any((v or "").strip() for v in row.values()):
            continue
        out.append(_condition(f"{path}, line {line_no}", dict(row)))
    return out


def _load_toml(path: Path) -> list[Condition]:
    text = read_input_text(path, StudyError)
    try:
        data = tomllib.loads(text)
    except (RecursionError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise StudyError(f"{path}: cannot parse the matrix ({parse_problem(exc) or exc})") from None
    rows = data.get("conditions")
    if not isinstance(rows, list):
        raise StudyError(f"{path}: expected a [[conditions]] array of tables")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise StudyError(f"{path}: conditions[{i}] must be a table")
        out.append(_condition(f"{path}: conditions[{i}]", row))
    return out
