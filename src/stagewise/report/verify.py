"""`stagewise verify BUNDLE`: check an audit bundle without trusting whoever made it.

1. Integrity: every file of MANIFEST.json exists with its size and sha256; no file is extra;
   MANIFEST.csv says the same.
2. Frozen rules: each record's canonical JSON hashes to its recorded sha256.
3. Event log: each event links to the one before it; unscrubbed events re-hash to their hash.
4. Re-derivation: from `results/runs.json` and `study/study.toml` alone, every gate table and
   cell table (and the failed-run table) is recomputed with the same analysis code and compared
   with the bundled one (numbers within 1e-9, everything else exactly).
Any difference is a problem; the CLI prints them all and exits 1.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.errors import StagewiseError
from stagewise.ledger import RunKey, RunRecord, canonical_json, sha256_text
from stagewise.report import analyses
from stagewise.report.bundle import (
    DECISIONS_JSON,
    EVENTS_JSON,
    MANIFEST_CSV,
    MANIFEST_JSON,
    MANIFESTS,
    RUNS_JSON,
    STUDY_DIR,
    canonical_hash_ok,
    sha256_file,
)
from stagewise.report.context import gate_cells
from stagewise.report.tables import Table, cells_table_of, failed_runs_table_of, gate_table_of
from stagewise.study import load_study
from stagewise.study.model import Study

TOLERANCE = 1e-9
GENESIS_LEN = 64


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    files: int = 0
    frozen: int = 0
    frozen_unchecked: int = 0
    events: int = 0
    rederived: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (
            f"{self.files} files re-hashed, {self.frozen} frozen rules re-hashed"
            f"{f' ({self.frozen_unchecked} scrubbed, not re-hashable)' if self.frozen_unchecked else ''}"
            f", {self.events} events linked, {self.rederived} tables re-derived"
        )


def _load_json(path: Path, report: VerifyReport) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.problems.append(f"{path.name}: unreadable ({exc})")
        return None


def check_manifest(bundle: Path, report: VerifyReport) -> None:
    manifest = _load_json(bundle / MANIFEST_JSON, report)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        report.problems.append(f"{MANIFEST_JSON}: missing or malformed")
        return
    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        rel = str(entry.get("path"))
        listed[rel] = entry
        path = bundle / rel
        if not path.is_file():
            report.problems.append(f"missing file: {rel}")
            continue
        if path.stat().st_size != entry.get("bytes"):
            report.problems.append(
                f"changed file: {rel} ({path.stat().st_size} bytes, manifest says {entry.get('bytes')})"
            )
        elif sha256_file(path) != entry.get("sha256"):
            report.problems.append(f"changed file: {rel} (sha256 differs from the manifest)")
        report.files += 1
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        rel = path.relative_to(bundle).as_posix()
        if rel not in listed and rel not in MANIFESTS:
            report.problems.append(f"extra file not in the manifest: {rel}")
    try:
        with (bundle / MANIFEST_CSV).open(newline="", encoding="utf-8") as fh:
            rows = {r["path"]: r for r in csv.DictReader(fh)}
    except (OSError, KeyError) as exc:
        report.problems.append(f"{MANIFEST_CSV}: unreadable ({exc})")
        return
    same = set(rows) == set(listed) and all(
        rows[p]["sha256"] == listed[p]["sha256"] and rows[p]["bytes"] == str(listed[p]["bytes"])
        for p in rows
    )
    if not same:
        report.problems.append(f"{MANIFEST_CSV} disagrees with {MANIFEST_JSON}")


def check_frozen(bundle: Path, report: VerifyReport) -> None:
    for path in sorted((bundle / "frozen").glob("*.json")):
        data = _load_json(path, report)
        if not isinstance(data, dict):
            continue
        for i, rec in enumerate(data.get("records", [])):
            if rec.get("canonical_scrubbed"):
                report.frozen_unchecked += 1
                continue
            if not canonical_hash_ok(rec):
                report.problems.append(
                    f"frozen/{path.name}: record {i + 1}: canonical JSON does not hash to {rec.get('sha256')}"
                )
            report.frozen += 1


def check_events(bundle: Path, report: VerifyReport) -> None:
    data = _load_json(bundle / EVENTS_JSON, report)
    if not isinstance(data, dict):
        return
    prev: str | None = None
    for ev in data.get("events", []):
        if prev is not None and ev.get("prev_hash") != prev:
            report.problems.append(
                f"{EVENTS_JSON}: event {ev.get('seq')} does not link to the one before"
            )
        if not ev.get("scrubbed"):
            body = canonical_json(ev.get("payload"))
            digest = sha256_text(
                canonical_json([ev["prev_hash"], ev["ts"], ev["kind"], ev["subject"], body])
            )
            if digest != ev.get("hash"):
                report.problems.append(
                    f"{EVENTS_JSON}: event {ev.get('seq')} does not match its hash"
                )
        prev = ev.get("hash")
        report.events += 1
    if not data.get("chain_ok_at_bundle_time", False):
        report.problems.append(f"{EVENTS_JSON}: the ledger's chain was broken when bundled")


def load_runs(bundle: Path) -> list[RunRecord]:
    data = json.loads((bundle / RUNS_JSON).read_text(encoding="utf-8"))
    fields = RunRecord.__dataclass_fields__
    runs = []
    for row in data["runs"]:
        values = {k: row.get(k) for k in fields if k != "key"}
        values["attempts"] = values.get("attempts") or 0
        values["created_at"] = values.get("created_at") or ""
        key = RunKey(row["stage"], row["condition_id"], int(row["seed"]), row["host"])
        runs.append(RunRecord(key=key, **values))
    return runs


def plan_candidates(
    study: Study, decisions: list[dict[str, Any]]
) -> dict[str, tuple[str, ...] | None]:
    """Each stage's candidates from the bundled active decisions (as `build_plan` does)."""
    active = {d["gate"]: d for d in decisions if d.get("active")}
    order = {cid: i for i, cid in enumerate(study.condition_ids)}
    out: dict[str, tuple[str, ...] | None] = {}
    for stage in study.stages.values():
        cand = stage.candidates
        if cand.mode == "all":
            out[stage.stage_id] = study.condition_ids
        elif cand.mode == "list":
            out[stage.stage_id] = cand.ids
        else:
            d = active.get(cand.gate or "")
            out[stage.stage_id] = (
                tuple(sorted(d["promoted"], key=lambda c: order.get(c, 10**9))) if d else None
            )
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a == b)
    if isinstance(a, int | float) and isinstance(b, int | float):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return abs(float(a) - float(b)) <= TOLERANCE
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def compare_table(bundle: Path, table: Table, report: VerifyReport) -> None:
    rel = f"tables/{table.name}.json"
    bundled = _load_json(bundle / rel, report)
    if not isinstance(bundled, dict):
        return
    fresh = json.loads(table.to_json())
    if bundled.get("columns") != fresh["columns"]:
        report.problems.append(f"{rel}: columns differ from the re-derived table")
        return
    rows_b, rows_f = bundled.get("rows", []), fresh["rows"]
    if len(rows_b) != len(rows_f):
        report.problems.append(f"{rel}: {len(rows_b)} rows, re-derived {len(rows_f)}")
        return
    for i, (rb, rf) in enumerate(zip(rows_b, rows_f, strict=True)):
        for col in fresh["columns"]:
            if not same(rb.get(col), rf.get(col)):
                report.problems.append(
                    f"{rel}: row {i + 1} ({rf.get('condition_id', '')}) {col}: bundled "
                    f"{rb.get(col)!r}, re-derived {rf.get(col)!r}"
                )
    # The CSV twin must say the same as the JSON it sits beside.
    csv_path = bundle / f"tables/{table.name}.csv"
    if csv_path.is_file() and csv_path.read_text(encoding="utf-8") != table.to_csv():
        report.problems.append(f"tables/{table.name}.csv: differs from the re-derived table")
    report.rederived += 1


def rederive(bundle: Path, report: VerifyReport) -> None:
    try:
        study = load_study(bundle / STUDY_DIR)
        runs = load_runs(bundle)
    except (StagewiseError, OSError, ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"cannot load the bundled study or runs: {exc}")
        return
    decisions = _load_json(bundle / DECISIONS_JSON, report) or {}
    candidates = plan_candidates(study, decisions.get("decisions", []))
    tables_dir = bundle / "tables"
    for gate in study.gates.values():
        cells = gate_cells(study, runs, gate)
        cells_tab = cells_table_of(study, gate, cells)
        expected_gate = tables_dir / f"gate_{gate.gate_id}.json"
        if cells_tab is not None:
            compare_table(bundle, cells_tab, report)
        elif (tables_dir / f"cells_{gate.gate_id}.json").exists():
            report.problems.append(
                f"tables/cells_{gate.gate_id}.json: no cells in the bundled runs"
            )
        result, why = (
            analyses.gate_result_from_runs(study, runs, gate.gate_id, candidates)
            if cells
            else (None, "")
        )
        table = gate_table_of(gate, result)
        if table is not None:
            if not expected_gate.exists():
                report.problems.append(
                    f"tables/gate_{gate.gate_id}.json: missing (the runs give it)"
                )
            else:
                compare_table(bundle, table, report)
        elif expected_gate.exists():
            report.problems.append(
                f"tables/gate_{gate.gate_id}.json: cannot be re-derived from the bundled runs"
                + (f" ({why})" if why else "")
            )
    compare_table(bundle, failed_runs_table_of(runs), report)


def verify_bundle(bundle: Path) -> VerifyReport:
    report = VerifyReport()
    if not (bundle / MANIFEST_JSON).is_file():
        report.problems.append(f"{bundle}: no {MANIFEST_JSON}; not a stagewise bundle")
        return report
    check_manifest(bundle, report)
    check_frozen(bundle, report)
    check_events(bundle, report)
    rederive(bundle, report)
    return report
