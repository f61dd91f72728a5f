"""A report table as plain rows (a list of dicts), with its CSV and JSON writers.

A table knows its columns (in order), where its numbers come from (`sources`: files of the
audit bundle) and a note shown under it. Values stay unrounded; the HTML rounds for display.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.paths import safe_join

# One row of a table or of a figure's data: column -> value. A value is shown, never computed
# with here (csv_value and json_value write any of them), so `object`, not `Any`: a reader
# that needs a number from a row has to check it is one.
Row = dict[str, object]


def pick(row: Mapping[str, object], columns: Sequence[str]) -> Row:
    """The row's values of `columns`, in their order (None where it has none)."""
    return {c: row.get(c) for c in columns}


# Files of the audit bundle that most tables' numbers come from.
RUNS_SOURCE = "results/runs.csv"
STUDY_SOURCES = ["study/study.toml", "study/matrix"]


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    columns: list[str]
    rows: Sequence[Mapping[str, object]]
    note: str = ""
    sources: list[str] = field(default_factory=list)
    command: str = ""
    published: bool = False

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({c: csv_value(row.get(c)) for c in self.columns})
        return buf.getvalue()

    def to_json(self) -> str:
        payload = {
            "table": self.name,
            "title": self.title,
            "note": self.note,
            "columns": self.columns,
            "rows": [{c: json_value(row.get(c)) for c in self.columns} for row in self.rows],
        }
        return json.dumps(payload, indent=2, ensure_ascii=False) + "\n"

    def write(self, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        csv_path = safe_join(folder, f"{self.name}.csv")  # names hold gate ids
        json_path = safe_join(folder, f"{self.name}.json")
        csv_path.write_text(self.to_csv(), encoding="utf-8")
        json_path.write_text(self.to_json(), encoding="utf-8")
        return [csv_path, json_path]


def csv_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return "; ".join(csv_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return [json_value(v) for v in value]
    if isinstance(value, list):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    return value


def flatten(value: Any) -> Any:
    """Nested lists/dicts inside a row become one readable cell."""
    if isinstance(value, list | tuple) and all(not isinstance(v, dict | list) for v in value):
        return list(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value
