"""Published summary tables shipped with a study (`published/*.csv`): loading and matching.

The paper06 example ships the pooled tables of the stages whose cells were never published.
They are read here once: the report shows them as they are (labelled, never recomputed) and the
gate layer compares its recomputed numbers with them at the printed precision. A table is
attached to a gate or a stage by its file name: `stage1c_10min_pooled` -> the stages starting
with `stage1c` -> the gate pooling them.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.study.model import Study

PUBLISHED_DIR = "published"
# Files of `published/` that are records rather than summaries: when each gate was written down
# outside the tool (`gate_records.csv`), recorded GPU-hours the publication states
# (`recorded_hours.csv`) and the publication's own caveats, each shown where it applies
# (`notes.csv`: where, text).
GATE_RECORDS, RECORDED_HOURS, NOTES = "gate_records", "recorded_hours", "notes"
RECORD_KINDS = (GATE_RECORDS, RECORDED_HOURS, NOTES)


@dataclass(frozen=True)
class PublishedTable:
    name: str  # file stem, e.g. "stage2_60min_pooled"
    path: Path
    rows: tuple[dict[str, str], ...]
    columns: tuple[str, ...]
    # "pooled" (a gate or stage table) | "sensitivity" | "budget" | "stages" | "other", or one
    # of RECORD_KINDS: the study's own records of what happened outside the tool
    kind: str
    stages: tuple[str, ...]  # the study stages it summarises
    gate: str | None  # the gate pooling those stages, if any

    @property
    def relpath(self) -> str:
        return f"{PUBLISHED_DIR}/{self.path.name}"


def _read(path: Path) -> tuple[tuple[dict[str, str], ...], tuple[str, ...]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = tuple(dict(r) for r in reader)
        return rows, tuple(reader.fieldnames or ())


def _attach(study: Study, name: str) -> tuple[tuple[str, ...], str | None]:
    token = name.split("_")[0]
    if token in study.stages:
        stages: tuple[str, ...] = (token,)
    else:
        stages = tuple(s for s in study.stages if s.startswith(token))
    if not stages:
        return (), None
    pooled = "pooled" in name or "sensitivity" in name
    best: str | None = None
    best_n = 0
    for gate in study.gates.values():
        # The widest gate pools the replicated stages (g10 pools stage1b + stage1c).
        fits = set(stages) <= set(gate.stages) and (pooled or len(gate.stages) == len(stages))
        if fits and len(gate.stages) > best_n:
            best, best_n = gate.gate_id, len(gate.stages)
    return stages, best


def load_published_tables(study: Study) -> list[PublishedTable]:
    """Every `published/*.csv` of the study folder, in name order (empty when there are none)."""
    folder = study.root / PUBLISHED_DIR
    if not folder.is_dir():
        return []
    tables = []
    for path in sorted(folder.glob("*.csv")):
        rows, columns = _read(path)
        name = path.stem
        stages, gate = _attach(study, name) if name not in RECORD_KINDS else ((), None)
        if name in RECORD_KINDS:
            kind = name
        elif "sensitivity" in name:
            kind = "sensitivity"
        elif name == "budget":
            kind = "budget"
        elif name == "stages":
            kind = "stages"
        elif stages:
            kind = "pooled"
        else:
            kind = "other"
        tables.append(PublishedTable(name, path, rows, columns, kind, stages, gate))
    return tables


@dataclass(frozen=True)
class OutsideFreeze:
    """A gate's rule as written down outside the tool (`published/gate_records.csv`): the date,
    the stage it was written before, and the record that holds it; stagewise holds no hash of it.
    """

    gate: str
    written_on: str
    written_before: str
    record: str
    decided_on: str = ""
    decision_record: str = ""
    note: str = ""

    def words(self) -> str:
        text = f"written down {self.written_on}" + (
            f" before {self.written_before}" if self.written_before else ""
        )
        text += f" ({self.record})" if self.record else ""
        if self.decided_on:
            text += f"; decided {self.decided_on}" + (
                f" ({self.decision_record})" if self.decision_record else ""
            )
        return text + (f"; {self.note}" if self.note else "")


def outside_freezes(tables: Sequence[PublishedTable]) -> dict[str, OutsideFreeze]:
    """gate -> its record of `published/gate_records.csv` (empty when the study has none)."""
    out: dict[str, OutsideFreeze] = {}
    for table in tables:
        if table.kind != GATE_RECORDS:
            continue
        for row in table.rows:
            gate = (row.get("gate") or "").strip()
            if gate:
                out[gate] = OutsideFreeze(
                    gate,
                    (row.get("written_on") or "").strip(),
                    (row.get("written_before") or "").strip(),
                    (row.get("record") or "").strip(),
                    (row.get("decided_on") or "").strip(),
                    (row.get("decision_record") or "").strip(),
                    (row.get("note") or "").strip(),
                )
    return out


def published_notes(tables: Sequence[PublishedTable], where: str) -> list[str]:
    """The study's own notes (`published/notes.csv`) for one place of the report."""
    return [
        (row.get("text") or "").strip()
        for table in tables
        if table.kind == NOTES
        for row in table.rows
        if (row.get("where") or "").strip() == where and (row.get("text") or "").strip()
    ]


@dataclass(frozen=True)
class PublishedHours:
    """Recorded GPU-hours a publication states (`published/recorded_hours.csv`)."""

    scope: str  # "all stages" or a stage id
    hours: float
    printed: str  # as the publication prints it ("169.2")
    note: str


def published_hours(tables: Sequence[PublishedTable]) -> list[PublishedHours]:
    out = []
    for table in tables:
        if table.kind != RECORDED_HOURS:
            continue
        for row in table.rows:
            hours = as_float(row.get("recorded_gpu_hours"))
            if hours is not None:
                out.append(
                    PublishedHours(
                        (row.get("scope") or "all stages").strip(),
                        hours,
                        (row.get("printed") or "").strip(),
                        (row.get("note") or "").strip(),
                    )
                )
    return out


def covered_stages(study: Study, tables: Sequence[PublishedTable]) -> dict[str, list[str]]:
    """stage -> the published summaries that cover it: a stage's own table, or a pooled table
    of a gate (which covers every stage the gate pools: stage1c_10min_pooled covers stage1b)."""
    out: dict[str, list[str]] = {}
    for table in tables:
        if table.kind in RECORD_KINDS:
            continue
        stages = list(table.stages)
        if table.gate and table.gate in study.gates:
            stages += [s for s in study.gates[table.gate].stages if s not in stages]
        for stage in stages:
            out.setdefault(stage, []).append(table.name)
    return out


def as_float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def compare_with_published(
    study_root: Path | str,
    stages: Sequence[str],
    conditions: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Where recomputed gate figures differ from a published pooled table of the same stages.

    A published table belongs to the gate when its name starts with one of the gate's stage ids
    and it is a pooled table (`stage3_12h_pooled`). Each numeric column present in both is
    compared at the printed precision: a difference is listed when the recomputed value, printed
    with the same number of decimals, does not read as the published digits (the recomputation
    is not bent to match; the published cells were rounded before pooling). `conditions` are
    the gate's condition rows as in its JSON.
    """
    folder = Path(study_root) / PUBLISHED_DIR
    if not folder.is_dir():
        return []
    out: list[dict[str, Any]] = []
    by_label = {str(c.get("label")): c for c in conditions}
    for path in sorted(folder.glob("*.csv")):
        name = path.stem
        if "pooled" not in name or name.split("_")[0] not in stages:
            continue
        rows, _ = _read(path)
        for row in rows:
            ours = by_label.get(row.get("label", ""))
            if ours is None:
                continue
            for column, printed in row.items():
                value = ours.get(column)
                if column == "label" or not isinstance(value, int | float) or not printed:
                    continue
                try:
                    published = float(printed)
                except ValueError:
                    continue
                digits = _decimals(printed)
                if f"{value:.{digits}f}" != printed:
                    out.append(
                        {
                            "table": f"{PUBLISHED_DIR}/{name}.csv",
                            "label": row["label"],
                            "column": column,
                            "recomputed": float(value),
                            "published": printed,
                            "abs_diff": abs(float(value) - published),
                        }
                    )
    return out
