"""Published summary tables shipped with a study (`published/*.csv`), never recomputed.

The paper06 example ships the pooled tables of the stages whose cells were never published.
A report shows them as they are, labelled "published summary (not recomputed)", and the figures
use them only where no recomputed gate exists. A table is attached to a gate or a stage by its
file name: `stage1c_10min_pooled` -> the stages starting with `stage1c` -> the gate pooling them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from stagewise.study.model import Study

PUBLISHED_DIR = "published"
PUBLISHED_LABEL = "published summary (not recomputed)"


@dataclass(frozen=True)
class PublishedTable:
    name: str  # file stem, e.g. "stage2_60min_pooled"
    path: Path
    rows: tuple[dict[str, str], ...]
    columns: tuple[str, ...]
    kind: str  # "pooled" (a gate or stage table) | "sensitivity" | "budget" | "stages" | "other"
    stages: tuple[str, ...]  # the study stages it summarises
    gate: str | None  # the gate pooling those stages, if any

    @property
    def relpath(self) -> str:
        return f"{PUBLISHED_DIR}/{self.path.name}"


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
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = tuple(dict(r) for r in reader)
            columns = tuple(reader.fieldnames or ())
        name = path.stem
        stages, gate = _attach(study, name)
        if "sensitivity" in name:
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


def as_float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
