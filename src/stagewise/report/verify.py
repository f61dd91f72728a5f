"""`stagewise verify BUNDLE [--expect HEAD]`: check an audit bundle without trusting its maker.

1. Files: every path of MANIFEST.json stays inside the bundle, exists with its size and sha256;
   no file is extra; MANIFEST.csv says the same; every file the tool writes is there.
2. Chain: each event links to the one before; its hash is recomputed (schema v3 events hash
   each field, so a scrubbed path still proves the link; the data digests are never scrubbed);
   the head is the bundle's stated head and, with `--expect`, the one published elsewhere.
3. Commitments: every run, frozen record and decision of the bundle is what the chain recorded
   (ids renamed by scrubbing and scrubbed texts through the hashes in ledger/commitments.json).
4. Frozen rules: each record's canonical JSON hashes to its sha256, and study.toml's gate is the
   gate that was frozen.
5. Re-derivation: a scratch ledger is rebuilt from the bundled runs, frozen records and decisions,
   and the report's own code (`collect`, `all_tables`, `render_figures`) recomputes every table,
   figure data file and computed decision; each is compared with the bundled one (numbers within
   1e-9, everything else exactly). Figures are compared byte for byte when drawn by the same
   matplotlib as the bundle's.
Any difference is a problem; the CLI prints them all and exits 1. docs/report.md says what this
proves and what it cannot.
"""

from __future__ import annotations

import csv
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from stagewise.errors import StagewiseError
from stagewise.ledger import (
    DecisionRecord,
    FreezeRecord,
    Ledger,
    RunKey,
    RunRecord,
    canonical_json,
    sha256_text,
)
from stagewise.ledger import integrity as chain
from stagewise.ledger.integrity import TableRow
from stagewise.ledger.store import GENESIS, event_hash_v2
from stagewise.report.bundle import (
    COMMITMENTS_JSON,
    DECISIONS_JSON,
    EVENTS_JSON,
    FIGURE_MANIFEST,
    MANIFEST_CSV,
    MANIFEST_JSON,
    MANIFESTS,
    RUNS_CSV,
    RUNS_JSON,
    STUDY_DIR,
    TABLE_MANIFEST,
    canonical_hash_ok,
    sha256_file,
)
from stagewise.report.tables import RUN_COLUMNS, Table
from stagewise.study import load_study
from stagewise.study.model import Study

TOLERANCE = 1e-9
FIXED_FILES = (
    "README.md",
    f"{STUDY_DIR}/study.toml",
    RUNS_CSV,
    RUNS_JSON,
    DECISIONS_JSON,
    EVENTS_JSON,
    COMMITMENTS_JSON,
    TABLE_MANIFEST,
    FIGURE_MANIFEST,
)
# Payload fields that carry the chain's data commitments: hashes, counts and flags, which no
# scrubbing ever changes; a bundle that shows them differently from their hash is forged.
DATA_FIELDS = frozenset(
    {
        "results",
        "rows_sha256",
        "key_sha256",
        "result_sha256",
        "record_sha256",
        "sha256",
        "post_hoc",
        "frozen_sha256",
        "supersedes",
        "decision_seq",
        "runs",
        "freezes",
        "decisions",
        "from",
        "to",
    }
)
# Figures drawn from files outside the bundle (each run's loss log): listed, not re-derived.
NOT_REDERIVABLE = ("figures/learning_curve",)
# Summary rows that describe the ledger file itself, checked against the event log instead.
LEDGER_SUMMARY_ITEMS = ("ledger events", "event chain")


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    frozen: int = 0
    frozen_unchecked: int = 0
    events: int = 0
    rederived: int = 0
    commitments: int = 0
    figures: int = 0
    chain_head: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        scrubbed = f" ({self.frozen_unchecked} scrubbed)" if self.frozen_unchecked else ""
        return (
            f"{self.files} files re-hashed, {self.events} events linked (head "
            f"{self.chain_head}), {self.commitments} records proven against the chain, "
            f"{self.frozen} frozen rules re-hashed{scrubbed}, {self.rederived} tables and "
            f"{self.figures} figures re-derived"
        )


def _load_json(path: Path, report: VerifyReport) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.problems.append(f"{path.name}: unreadable ({exc})")
        return None


def safe_member(bundle: Path, rel: str) -> Path | None:
    """`bundle/rel` if `rel` is a plain relative path that stays inside the bundle."""
    pure = PurePosixPath(rel)
    if not rel or "\\" in rel or pure.is_absolute() or ".." in pure.parts or ":" in rel:
        return None
    path = bundle / pure
    try:
        path.resolve().relative_to(bundle.resolve())
    except ValueError:  # a link that points out of the bundle
        return None
    return path


# --------------------------------------------------------------------------- 1. files


def check_manifest(bundle: Path, report: VerifyReport) -> set[str]:
    manifest = _load_json(bundle / MANIFEST_JSON, report)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        report.problems.append(f"{MANIFEST_JSON}: missing or malformed")
        return set()
    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        rel = str(entry.get("path")) if isinstance(entry, dict) else ""
        path = safe_member(bundle, rel)
        if path is None:
            report.problems.append(f"{MANIFEST_JSON}: path {rel!r} leaves the bundle; refused")
            continue
        listed[rel] = entry
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
    for path in sorted(p for p in bundle.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(bundle).as_posix()
        if rel not in listed and rel not in MANIFESTS:
            report.problems.append(f"extra file not in the manifest: {rel}")
    try:
        with (bundle / MANIFEST_CSV).open(newline="", encoding="utf-8") as fh:
            rows = {r["path"]: r for r in csv.DictReader(fh)}
    except (OSError, KeyError) as exc:
        report.problems.append(f"{MANIFEST_CSV}: unreadable ({exc})")
        return set(listed)
    same_rows = set(rows) == set(listed) and all(
        rows[p].get("sha256") == listed[p].get("sha256")
        and rows[p].get("bytes") == str(listed[p].get("bytes"))
        for p in rows
    )
    if not same_rows:
        report.problems.append(f"{MANIFEST_CSV} disagrees with {MANIFEST_JSON}")
    return set(listed)


def require(listed: set[str], rel: str, why: str, report: VerifyReport) -> None:
    if rel not in listed:
        report.problems.append(f"missing file: {rel} ({why})")


# --------------------------------------------------------------------------- 2. chain


def check_events(
    bundle: Path, report: VerifyReport, expect: str | None
) -> list[tuple[int, str, dict[str, Any]]]:
    """Re-link and re-hash the event log; return the events whose data fields are proven."""
    data = _load_json(bundle / EVENTS_JSON, report)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        report.problems.append(f"{EVENTS_JSON}: missing or malformed")
        return []
    proven: list[tuple[int, str, dict[str, Any]]] = []
    prev = GENESIS
    unproven = 0
    for ev in data["events"]:
        try:
            seq, kind, payload = int(ev["seq"]), str(ev["kind"]), dict(ev["payload"])
            where = f"{EVENTS_JSON}: event {seq} ({kind})"
            if ev.get("prev_hash") != prev:
                report.problems.append(f"{where}: does not link to the event before it")
            fmt = int(ev.get("format", 1))
            if fmt >= 2:
                fields = dict(ev["payload_sha256"])
                digest = event_hash_v2(
                    ev["prev_hash"], ev["ts"], kind, ev["subject_sha256"], fields
                )
                if digest != ev.get("hash"):
                    report.problems.append(f"{where}: does not match its hash")
                if set(fields) != set(payload):
                    report.problems.append(f"{where}: its fields differ from the hashed ones")
                for name, value in payload.items():
                    if sha256_text(canonical_json(value)) == fields.get(name):
                        continue
                    if name in DATA_FIELDS or not ev.get("scrubbed"):
                        report.problems.append(f"{where}: field {name} does not match its hash")
                if sha256_text(str(ev["subject"])) != ev["subject_sha256"] and not ev.get(
                    "scrubbed"
                ):
                    report.problems.append(f"{where}: subject does not match its hash")
                proven.append((seq, kind, {k: v for k, v in payload.items() if k in DATA_FIELDS}))
            elif not ev.get("scrubbed"):
                body = canonical_json(payload)
                digest = sha256_text(
                    canonical_json([ev["prev_hash"], ev["ts"], kind, ev["subject"], body])
                )
                if digest != ev.get("hash"):
                    report.problems.append(f"{where}: does not match its hash")
                proven.append((seq, kind, payload))
            else:
                unproven += 1  # a pre-v3 event with a scrubbed path: linked, not re-hashable
            prev = str(ev.get("hash"))
        except (KeyError, TypeError, ValueError) as exc:
            report.problems.append(f"{EVENTS_JSON}: malformed event ({exc})")
            return []
        report.events += 1
    report.chain_head = prev
    if data.get("chain_head", prev) != prev:
        report.problems.append(
            f"{EVENTS_JSON}: states chain head {data.get('chain_head')}, its events end at {prev}"
        )
    if expect is not None and expect.strip().lower() != prev:
        report.problems.append(f"chain head is {prev}, expected {expect.strip()}")
    if not data.get("chain_ok_at_bundle_time", False):
        report.problems.append(f"{EVENTS_JSON}: the ledger's chain was broken when bundled")
    if unproven:
        report.notes.append(f"{unproven} pre-v3 events carry scrubbed paths: linked, not re-hashed")
    return proven


# --------------------------------------------------------------------------- bundled records


class _Hashes(chain.LedgerHashes):
    """Hashes of ids and texts as the ledger had them, through ledger/commitments.json."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.renamed = {str(k): str(v) for k, v in dict(data.get("renamed", {})).items()}
        self.texts = {str(k): str(v) for k, v in dict(data.get("texts", {})).items()}

    def id(self, value: str) -> str:
        return self.renamed.get(value) or super().id(value)

    def text(self, value: str | None) -> str:
        shown = super().text(value)
        return self.texts.get(shown, shown)

    def json(self, value: Any) -> str:
        shown = super().json(value)
        return self.texts.get(shown, shown)


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


def load_freezes(bundle: Path) -> list[FreezeRecord]:
    records = []
    for path in sorted((bundle / "frozen").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for rec in data["records"]:
            records.append((int(rec["event_seq"]), str(data["gate"]), rec))
    out = []
    for i, (seq, gate, rec) in enumerate(sorted(records, key=lambda r: r[0]), start=1):
        out.append(
            FreezeRecord(
                i,
                gate,
                str(rec["kind"]),
                str(rec["sha256"]),
                str(rec["canonical"]),
                str(rec["frozen_at"]),
                bool(rec["post_hoc"]),
                rec.get("reason"),
                list(rec.get("results_at_freeze") or []),
                seq,
            )
        )
    return out


def load_decisions(bundle: Path) -> list[DecisionRecord]:
    data = json.loads((bundle / DECISIONS_JSON).read_text(encoding="utf-8"))
    out = []
    for d in data["decisions"]:
        out.append(
            DecisionRecord(
                int(d["id"]),
                str(d["gate"]),
                str(d["kind"]),
                tuple(d["promoted"]),
                d.get("reason"),
                d.get("source"),
                d.get("frozen_sha256"),
                dict(d.get("payload") or {}),
                str(d["decided_at"]),
                d.get("withdrawn_at"),
                d.get("withdraw_reason"),
                int(d["event_seq"]),
            )
        )
        if bool(d.get("active")) != (d.get("withdrawn_at") is None):
            raise ValueError(f"decision {d['id']}: 'active' contradicts 'withdrawn_at'")
    return sorted(out, key=lambda d: d.id)


def _run_rows(runs: list[RunRecord], h: _Hashes) -> Iterator[TableRow]:
    for r in runs:
        yield chain.run_row(r, h, f"{RUNS_JSON}: run {r.key}")


def _freeze_rows(freezes: list[FreezeRecord], h: _Hashes) -> Iterator[TableRow]:
    for f in freezes:
        label = f"frozen/{f.gate}.json: {f.kind} record (event {f.event_seq})"
        yield chain.freeze_row(f, h, label)


def _decision_rows(decisions: list[DecisionRecord], h: _Hashes) -> Iterator[TableRow]:
    for d in decisions:
        label = f"{DECISIONS_JSON}: decision {d.id} of {d.gate} (event {d.event_seq})"
        yield chain.decision_row(d, h, label)


# --------------------------------------------------------------------------- 4. frozen rules


def check_frozen(
    bundle: Path, study: Study, freezes: list[FreezeRecord], report: VerifyReport
) -> None:
    from stagewise.gates.freeze import frozen_definition

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
                    f"frozen/{path.name}: record {i + 1}: canonical JSON does not hash to "
                    f"{rec.get('sha256')}"
                )
            report.frozen += 1
    current: dict[str, FreezeRecord] = {}
    for f in freezes:
        current[f.gate] = f
    for gate_id, rec in current.items():
        if gate_id not in study.gates:
            report.problems.append(f"frozen/{gate_id}.json: gate {gate_id} is not in study.toml")
            continue
        try:
            stored = json.loads(rec.canonical).get("frozen")
            now = frozen_definition(study, gate_id)
        except (ValueError, AttributeError, StagewiseError) as exc:
            report.problems.append(f"frozen/{gate_id}.json: unreadable frozen record ({exc})")
            continue
        if canonical_json(stored) != canonical_json(now):
            report.problems.append(
                f"{STUDY_DIR}/study.toml: gate {gate_id} differs from its frozen record "
                f"(frozen/{gate_id}.json, sha256 {rec.sha256})"
            )


# --------------------------------------------------------------------------- 5. re-derivation


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
    bundled = _load_json(bundle / rel, report) if (bundle / rel).is_file() else None
    if not isinstance(bundled, dict):
        report.problems.append(f"{rel}: missing (the bundled results give it)")
        return
    fresh = json.loads(table.to_json())
    if bundled.get("columns") != fresh["columns"]:
        report.problems.append(f"{rel}: columns differ from the re-derived table")
        return
    rows_b, rows_f = bundled.get("rows", []), fresh["rows"]
    if table.name == "summary":
        rows_b = [r for r in rows_b if r.get("item") not in LEDGER_SUMMARY_ITEMS]
        rows_f = [r for r in rows_f if r.get("item") not in LEDGER_SUMMARY_ITEMS]
    if len(rows_b) != len(rows_f):
        report.problems.append(f"{rel}: {len(rows_b)} rows, re-derived {len(rows_f)}")
        return
    for i, (rb, rf) in enumerate(zip(rows_b, rows_f, strict=True)):
        for col in fresh["columns"]:
            if not same(rb.get(col), rf.get(col)):
                report.problems.append(
                    f"{rel}: row {i + 1} ({rf.get('condition_id', rf.get('item', ''))}) {col}: "
                    f"bundled {rb.get(col)!r}, re-derived {rf.get(col)!r}"
                )
    csv_path = bundle / f"tables/{table.name}.csv"
    if table.rows and table.name != "summary":
        if not csv_path.is_file():
            report.problems.append(f"tables/{table.name}.csv: missing")
        elif csv_path.read_text(encoding="utf-8") != table.to_csv():
            report.problems.append(f"tables/{table.name}.csv: differs from the re-derived table")
    report.rederived += 1


def _check_summary_ledger_rows(bundle: Path, report: VerifyReport) -> None:
    data = _load_json(bundle / "tables" / "summary.json", report)
    if not isinstance(data, dict):
        return
    items = {r.get("item"): r.get("value") for r in data.get("rows", [])}
    if "ledger events" in items and items["ledger events"] != report.events:
        report.problems.append(
            f"tables/summary.json: ledger events {items['ledger events']!r}, the event log "
            f"holds {report.events}"
        )
    if "event chain" in items and items["event chain"] != "intact":
        report.problems.append(f"tables/summary.json: event chain {items['event chain']!r}")


def check_runs_files(bundle: Path, runs: list[RunRecord], report: VerifyReport) -> None:
    """results/runs.csv must say exactly what results/runs.json says."""
    rows = [{c: getattr(r, c) for c in RUN_COLUMNS} for r in runs]
    table = Table("runs", "Runs", list(RUN_COLUMNS), rows)
    path = bundle / RUNS_CSV
    if path.is_file() and path.read_text(encoding="utf-8") != table.to_csv():
        report.problems.append(f"{RUNS_CSV}: differs from {RUNS_JSON}")


def check_decisions(ctx: Any, report: VerifyReport) -> None:
    """Each active computed decision is what its frozen rule gives on the bundled results."""
    for view in ctx.gates:
        active = view.active
        if active is None or active.manual:
            continue
        freeze = view.current_freeze
        if freeze is None or active.frozen_sha256 != freeze.sha256:
            report.problems.append(
                f"{DECISIONS_JSON}: the active decision of {view.gate_id} names frozen sha256 "
                f"{active.frozen_sha256}, not the gate's current freeze"
            )
            continue
        result = view.result
        if result is None:
            report.problems.append(
                f"{DECISIONS_JSON}: the decision of {view.gate_id} cannot be re-derived from "
                "the bundled results"
            )
            continue
        cells = active.payload.get("cells")
        if isinstance(cells, int) and cells != len(result.get("cells", [])):
            report.notes.append(
                f"decision of {view.gate_id} was taken on {cells} cells; the bundle now holds "
                f"{len(result.get('cells', []))}: proven against the chain, not re-derived"
            )
            continue
        if sorted(active.promoted) != sorted(result.get("promoted", [])):
            report.problems.append(
                f"{DECISIONS_JSON}: {view.gate_id} promotes {sorted(active.promoted)}, its "
                f"frozen rule on the bundled results promotes {sorted(result['promoted'])}"
            )
        verdicts = active.payload.get("verdicts")
        fresh = {c["condition_id"]: c["verdict"] for c in result.get("conditions", [])}
        if isinstance(verdicts, dict) and verdicts != fresh:
            report.problems.append(
                f"{DECISIONS_JSON}: the verdicts recorded for {view.gate_id} differ from the "
                "re-derived ones"
            )


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def check_figures(
    bundle: Path, ctx: Any, scratch: Path, h: _Hashes, report: VerifyReport, images: bool
) -> set[str]:
    """Every figure's data re-derived and compared; with `images`, every figure re-drawn and
    compared byte for byte when this matplotlib is the one that drew the bundle's."""
    from stagewise.report.bundle import _matplotlib_version
    from stagewise.report.figure_data import FIGURE_DATA
    from stagewise.report.figures import render_figures

    manifest = _load_json(bundle / FIGURE_MANIFEST, report) or {}
    drawn_by = (manifest.get("renderer") or {}).get("matplotlib")
    compare_images = (
        images and bool(drawn_by) and drawn_by == _matplotlib_version() and not h.renamed
    )
    if images and not compare_images:
        report.notes.append(
            f"figures drawn by matplotlib {drawn_by or '?'}, here {_matplotlib_version() or '?'}"
            f"{' (ids renamed)' if h.renamed else ''}: images not compared, their data is"
        )
    out = scratch / "figures"
    fresh_files: list[Path] = []
    if compare_images:
        for fig in render_figures(ctx, out):
            fresh_files += [p for p in (fig.png, fig.svg) if p is not None] + list(fig.data)
            report.figures += 0 if fig.skipped else 1
    else:
        for fn in FIGURE_DATA.values():
            result = fn(ctx)
            if isinstance(result, str):
                continue
            for data in result:
                fresh_files += [out / f"{data.name}.png", out / f"{data.name}.svg"]
                fresh_files += data.table.write(out)
                report.figures += 1
    expected: set[str] = set()
    for fresh in fresh_files:
        rel = f"figures/{fresh.name}"
        expected.add(rel)
        bundled = bundle / rel
        if not bundled.is_file():
            report.problems.append(f"missing file: {rel} (the bundled results draw it)")
            continue
        if fresh.suffix in (".png", ".svg") and not compare_images:
            continue
        if fresh.suffix == ".json":
            ok = same(
                json.loads(fresh.read_text(encoding="utf-8")),
                json.loads(bundled.read_text(encoding="utf-8")),
            )
        else:
            ok = _same_bytes(fresh, bundled)
        if not ok:
            report.problems.append(f"{rel}: differs from the figure re-drawn from the results")
    return expected


def rederive(
    bundle: Path,
    listed: set[str],
    proven: list[tuple[int, str, dict[str, Any]]],
    report: VerifyReport,
    images: bool = True,
) -> None:
    from stagewise.report.context import collect
    from stagewise.report.tables import all_tables

    try:
        study = load_study(bundle / STUDY_DIR)
        runs = load_runs(bundle)
        freezes = load_freezes(bundle)
        decisions = load_decisions(bundle)
        hashes = _Hashes(json.loads((bundle / COMMITMENTS_JSON).read_text(encoding="utf-8")))
    except (StagewiseError, OSError, ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"cannot load the bundled study or records: {exc}")
        return
    require(listed, f"{STUDY_DIR}/{study.matrix_file}", "the matrix", report)

    # 3. every bundled record against the chain's commitments
    problems = chain.compare(
        chain.commitments(proven),
        _run_rows(runs, hashes),
        _freeze_rows(freezes, hashes),
        _decision_rows(decisions, hashes),
    )
    report.problems.extend(problems)
    report.commitments = len(runs) + len(freezes) + len(decisions)
    check_frozen(bundle, study, freezes, report)
    check_runs_files(bundle, runs, report)

    with tempfile.TemporaryDirectory(prefix="stagewise-verify-") as tmp:
        scratch = Path(tmp)
        try:
            with Ledger.rebuild(scratch / "ledger", runs, freezes, decisions) as ledger:
                ctx = collect(study, ledger)
                tables = all_tables(ctx)
        except StagewiseError as exc:
            report.problems.append(f"cannot re-derive the report from the bundle: {exc}")
            return
        expected = {RUNS_CSV, RUNS_JSON}
        for table in tables:
            if table.name == "runs":
                continue
            compare_table(bundle, table, report)
            expected.add(f"tables/{table.name}.json")
            if table.rows:
                expected.add(f"tables/{table.name}.csv")
        _check_summary_ledger_rows(bundle, report)
        check_decisions(ctx, report)
        expected |= check_figures(bundle, ctx, scratch, hashes, report, images)
    for rel in sorted(listed):
        if rel.startswith(("tables/", "figures/")) and rel not in expected:
            if rel.startswith(NOT_REDERIVABLE):
                report.notes.append(f"{rel}: drawn from run logs the bundle does not hold")
            else:
                report.problems.append(f"{rel}: the bundled results do not give this file")


def verify_bundle(bundle: Path, expect: str | None = None, *, images: bool = True) -> VerifyReport:
    """Check a bundle; `images=False` re-derives figure data but does not re-draw (seconds
    faster; the CLI always re-draws)."""
    report = VerifyReport()
    bundle = Path(bundle)
    if not (bundle / MANIFEST_JSON).is_file():
        report.problems.append(f"{bundle}: no {MANIFEST_JSON}; not a stagewise bundle")
        return report
    listed = check_manifest(bundle, report)
    for rel in FIXED_FILES:
        require(listed, rel, "every bundle has it", report)
    proven = check_events(bundle, report, expect)
    rederive(bundle, listed, proven, report, images)
    return report
