"""`stagewise verify BUNDLE [--expect HEAD]`: check an audit bundle without trusting its maker.

1. Files: every path of MANIFEST.json stays inside the bundle, exists with its size and sha256;
   no file is extra; MANIFEST.csv says the same; every file the tool writes is there.
2. Chain: each event links to the one before; its hash is recomputed (schema v3 events hash
   each field, so a scrubbed path still proves the link; the data digests are never scrubbed);
   the head is the bundle's stated head and, with `--expect`, the one published elsewhere.
3. Commitments: every run, frozen record and decision of the bundle is what the chain recorded
   (ids renamed by scrubbing and scrubbed texts through the hashes in ledger/commitments.json).
4. Frozen rules: each record's canonical JSON hashes to its sha256, and study.toml's gate is the
   gate that was frozen. Recipes (`verify_recipes`): every bundled recipe's sha256 recomputed,
   the study files as the frozen recipes say, every result's recipe the frozen one.
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
import os
import stat
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from stagewise.audit.bundle import (
    RUNS_MANIFEST_ENTRY,
    canonical_hash_ok,
    dumps,
    sha256_file,
    table_manifest_entry,
)
from stagewise.audit.bundle_records import (
    BundleHashes,
    decision_rows,
    freeze_rows,
    load_decisions,
    load_freezes,
    load_runs,
    run_rows,
)
from stagewise.audit.layout import (
    COMMITMENTS_JSON,
    DECISIONS_JSON,
    EVENTS_JSON,
    FIGURE_MANIFEST,
    FIGURES_DIR,
    FROZEN_DIR,
    MANIFEST_CSV,
    MANIFEST_JSON,
    MANIFESTS,
    OUTSIDE_FILES,
    README_MD,
    RECIPES_JSON,
    RUNS_CSV,
    RUNS_JSON,
    STUDY_DIR,
    STUDY_TOML,
    TABLE_MANIFEST,
    TABLES_DIR,
    frozen_file,
    table_csv,
    table_json,
)
from stagewise.audit.verify_recipes import check_recipes
from stagewise.audit.verify_rederive import (
    NOT_REDERIVABLE_FIGURES,
    check_decisions,
    check_figures,
    check_runs_files,
    check_summary_ledger_rows,
    compare_table,
)
from stagewise.audit.verify_report import VerifyReport, load_json
from stagewise.errors import StagewiseError
from stagewise.gates.freeze import frozen_definition
from stagewise.ledger import FreezeRecord, Ledger, canonical_json, sha256_text
from stagewise.ledger import integrity as chain
from stagewise.ledger.core import shown_pair
from stagewise.ledger.masking import mask_paths, withheld_hash
from stagewise.ledger.store import GENESIS, event_hash_v2
from stagewise.report.context import collect
from stagewise.report.tables import all_tables
from stagewise.study import load_study
from stagewise.study.model import Study

FIXED_FILES = (
    README_MD,
    STUDY_TOML,
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
        chain.DIGEST_FORMAT_KEY,
    }
)
NOT_REDERIVABLE = NOT_REDERIVABLE_FIGURES
# A hostile bundle cannot make verify read without end: members are regular files inside the
# bundle of bounded size (a study's largest bundle file, its event log, is a few MB).
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_MEMBERS = 100_000


# Files the bundle writes with `dumps` (sorted keys, 2-space indent): any other byte is an edit.
def _dumps_written(rel: str) -> bool:
    return rel in (
        RECIPES_JSON,
        MANIFEST_JSON,
        RUNS_JSON,
        DECISIONS_JSON,
        EVENTS_JSON,
        COMMITMENTS_JSON,
        TABLE_MANIFEST,
        FIGURE_MANIFEST,
    ) or (rel.startswith(f"{FROZEN_DIR}/") and rel.endswith(".json"))


HOSTILE_INPUT = (
    StagewiseError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    IndexError,
    RecursionError,
    OverflowError,
)
# What verify does not check, said in its output (and in the bundle's README).
INFORMATIONAL = (
    f"{README_MD}: the bundle's description (not compared)",
    f"{STUDY_DIR}/published/*: published summaries, shown as published (never recomputed)",
    f"{STUDY_TOML}: checked where frozen (each frozen gate and the plan of its stages) and as "
    "the input every table is re-derived from; comments and layout not compared",
)


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


def scan_members(bundle: Path, report: VerifyReport) -> dict[str, int] | None:
    """Every entry of the bundle without following a link: regular files (path -> bytes) and
    folders. Anything else (a link, a FIFO, a device) or a file over MAX_MEMBER_BYTES is refused
    before a byte is read; None then, and verify stops."""
    members: dict[str, int] = {}
    refused: list[str] = []
    stack = [bundle]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            refused.append(f"{folder}: unreadable folder ({exc.strerror})")
            continue
        for entry in entries:
            rel = Path(entry.path).relative_to(bundle).as_posix()
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                refused.append(f"{rel}: unreadable ({exc.strerror})")
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            elif not stat.S_ISREG(st.st_mode):
                refused.append(f"{rel}: a {_kind(st.st_mode)}, not a regular file")
            elif st.st_size > MAX_MEMBER_BYTES:
                refused.append(f"{rel}: {st.st_size} bytes, over the {MAX_MEMBER_BYTES} limit")
            else:
                members[rel] = st.st_size
            if len(members) + len(refused) > MAX_MEMBERS:
                report.problems.append(f"{bundle}: over {MAX_MEMBERS} entries; refused")
                return None
    for problem in refused:
        report.problems.append(f"{problem}; verify reads only regular files inside the bundle")
    if refused:
        report.problems.append("refused before reading: nothing else of the bundle was checked")
        return None
    return members


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def check_manifest(bundle: Path, members: dict[str, int], report: VerifyReport) -> set[str]:
    manifest = load_json(bundle / MANIFEST_JSON, report)
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
        if rel not in members:
            report.problems.append(f"missing file: {rel}")
            continue
        if members[rel] != entry.get("bytes"):
            report.problems.append(
                f"changed file: {rel} ({members[rel]} bytes, manifest says {entry.get('bytes')})"
            )
        elif sha256_file(path) != entry.get("sha256"):
            report.problems.append(f"changed file: {rel} (sha256 differs from the manifest)")
        report.files += 1
    for rel in sorted(members):
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


def check_layout_bytes(bundle: Path, members: dict[str, int], report: VerifyReport) -> None:
    """Every JSON file the bundle writes with `dumps` must be exactly that: an edit that keeps
    the JSON's meaning (spacing, key order, escapes) is still an edit of a committed file."""
    for rel in sorted(members):
        if not _dumps_written(rel):
            continue
        text = (bundle / rel).read_bytes().decode("utf-8", errors="replace")
        try:
            canonical = dumps(json.loads(text))
        except (ValueError, RecursionError):
            continue  # reported by whichever check parses it
        if text != canonical:
            report.problems.append(f"{rel}: not written as a bundle writes it (edited)")


def check_record_files(
    bundle: Path,
    freezes: list[FreezeRecord],
    decisions: list[Any],
    report: VerifyReport,
) -> None:
    """decisions.json and frozen/*.json hold exactly the records read from them: a field no
    check reads (an extra key, a renamed one) is still an edit."""
    data = load_json(bundle / DECISIONS_JSON, report)
    shown = data.get("decisions") if isinstance(data, dict) else None
    expected = [{**d.as_dict(), "event_seq": d.event_seq} for d in decisions]
    if not isinstance(shown, list) or set(data) != {"decisions"}:
        report.problems.append(f"{DECISIONS_JSON}: expected one list 'decisions'")
    elif sorted(shown, key=lambda d: d.get("id", 0) if isinstance(d, dict) else 0) != expected:
        report.problems.append(f"{DECISIONS_JSON}: holds more or other than its decisions")
    by_gate: dict[str, list[FreezeRecord]] = {}
    for f in freezes:
        by_gate.setdefault(f.gate, []).append(f)
    for gate, records in by_gate.items():
        rel = frozen_file(gate)
        want = {
            "gate": gate,
            "current_sha256": records[-1].sha256,
            "records": [
                {
                    "kind": f.kind,
                    "sha256": f.sha256,
                    "canonical": f.canonical,
                    "canonical_scrubbed": sha256_text(f.canonical) != f.sha256,
                    "frozen_at": f.frozen_at,
                    "post_hoc": f.post_hoc,
                    "reason": f.reason,
                    "results_at_freeze": f.results_at_freeze,
                    "event_seq": f.event_seq,
                }
                for f in records
            ],
        }
        if load_json(bundle / rel, report) != want:
            report.problems.append(f"{rel}: holds more or other than its frozen records")


def check_table_manifest(
    bundle: Path, study: Study, tables: list[Any], report: VerifyReport
) -> None:
    """table_manifest.json entry by entry, as the bundle would write it from these results."""
    data = load_json(bundle / TABLE_MANIFEST, report)
    bundled = data.get("tables") if isinstance(data, dict) else None
    if not isinstance(bundled, dict) or set(data) != {"tables"}:
        report.problems.append(f"{TABLE_MANIFEST}: expected one object 'tables'")
        return
    expected: dict[str, Any] = {"runs": dict(RUNS_MANIFEST_ENTRY)}
    for table in tables:
        if table.name == "runs":
            continue
        entry = table_manifest_entry(table, study.matrix_file)
        entry["title"] = mask_paths(entry["title"])
        expected[table.name] = entry
    for name in sorted(set(expected) | set(bundled)):
        if bundled.get(name) != expected.get(name):
            report.problems.append(
                f"{TABLE_MANIFEST}: entry {name!r} differs from the one the bundled results give"
            )


def require(listed: set[str], rel: str, why: str, report: VerifyReport) -> None:
    if rel not in listed:
        report.problems.append(f"missing file: {rel} ({why})")


# --------------------------------------------------------------------------- 2. chain


EVENTS_KEYS = {"chain_ok_at_bundle_time", "chain_problems", "chain_head", "events"}
EVENT_KEYS = {"seq", "ts", "kind", "subject", "payload", "prev_hash", "hash", "scrubbed", "format"}
EVENT_HASH_KEYS = {"subject_sha256", "payload_sha256"}


def _check_event_v3(
    ev: dict[str, Any],
    seq: int,
    kind: str,
    payload: dict[str, Any],
    where: str,
    report: VerifyReport,
) -> None:
    """Format 3: each field and the subject are hashed as shown (masked) and as written; the
    bundle gives the hash as written, the shown text gives the other, so an edit of either
    breaks the event's hash. Data fields are never masked: they must hash as written."""
    originals = dict(ev["payload_sha256"])
    if set(originals) != set(payload):
        report.problems.append(f"{where}: its fields differ from the hashed ones")
        return
    pairs = {
        name: shown_pair(
            withheld_hash(value) or sha256_text(canonical_json(value)), str(originals[name])
        )
        for name, value in payload.items()
    }
    shown_subject = str(ev["subject"])
    subject = shown_pair(
        withheld_hash(shown_subject) or sha256_text(shown_subject), str(ev["subject_sha256"])
    )
    if event_hash_v2(ev["prev_hash"], ev["ts"], kind, subject, pairs) != ev.get("hash"):
        report.problems.append(f"{where}: does not match its hash")
    for name in DATA_FIELDS & set(payload):
        if sha256_text(canonical_json(payload[name])) != originals[name]:
            report.problems.append(f"{where}: field {name} does not match its hash")
    masked = sha256_text(shown_subject) != ev["subject_sha256"]
    masked = masked or any(
        sha256_text(canonical_json(value)) != originals[name] for name, value in payload.items()
    )
    if ev.get("scrubbed") is not masked:
        report.problems.append(f"{where}: its 'scrubbed' flag says {ev.get('scrubbed')!r}")


def check_events(
    bundle: Path, report: VerifyReport, expect: str | None
) -> list[tuple[int, str, dict[str, Any]]]:
    """Re-link and re-hash the event log; return the events whose data fields are proven."""
    data = load_json(bundle / EVENTS_JSON, report)
    if not isinstance(data, dict) or not isinstance(data.get("events"), list):
        report.problems.append(f"{EVENTS_JSON}: missing or malformed")
        return []
    proven: list[tuple[int, str, dict[str, Any]]] = []
    prev = GENESIS
    unproven = 0
    if set(data) != EVENTS_KEYS or data.get("chain_problems") != []:
        report.problems.append(f"{EVENTS_JSON}: holds more or other than the event log")
    for ev in data["events"]:
        try:
            keys = EVENT_KEYS | (EVENT_HASH_KEYS if int(ev.get("format", 1)) >= 2 else set())
            if set(ev) != keys:
                report.problems.append(f"{EVENTS_JSON}: event {ev.get('seq')}: unexpected fields")
            seq, kind, payload = int(ev["seq"]), str(ev["kind"]), dict(ev["payload"])
            where = f"{EVENTS_JSON}: event {seq} ({kind})"
            if ev.get("prev_hash") != prev:
                report.problems.append(f"{where}: does not link to the event before it")
            fmt = int(ev.get("format", 1))
            if fmt >= 3:
                _check_event_v3(ev, seq, kind, payload, where, report)
                proven.append((seq, kind, {k: v for k, v in payload.items() if k in DATA_FIELDS}))
            elif fmt >= 2:
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


# --------------------------------------------------------------------------- 4. frozen rules


def check_frozen(
    bundle: Path,
    study: Study,
    freezes: list[FreezeRecord],
    report: VerifyReport,
    commitments: chain.Commitments,
) -> None:
    for path in sorted((bundle / FROZEN_DIR).glob("*.json")):
        data = load_json(path, report)
        if not isinstance(data, dict):
            continue
        for i, rec in enumerate(data.get("records", [])):
            # `canonical_scrubbed` is the bundle's word, never trusted: a canonical text that
            # does not hash to its sha256 passes only as the masked form the chain committed to
            # (digest format 2, checked with the record's digest).
            if canonical_hash_ok(rec):
                report.frozen += 1
                continue
            try:
                fmt = commitments.format_of("freeze", int(rec.get("event_seq")))
            except (TypeError, ValueError):
                fmt = 1
            shown = str(rec.get("canonical"))
            if fmt >= 2 and ("<path>" in shown or withheld_hash(shown)):
                report.frozen += 1
                report.frozen_unchecked += 1  # shown masked, proven through the chain
                continue
            report.problems.append(
                f"{FROZEN_DIR}/{path.name}: record {i + 1}: canonical JSON does not hash to "
                f"{rec.get('sha256')}"
            )
    current: dict[str, FreezeRecord] = {}
    for f in freezes:
        current[f.gate] = f
    for gate_id, rec in current.items():
        if gate_id not in study.gates:
            report.problems.append(f"{frozen_file(gate_id)}: gate {gate_id} is not in study.toml")
            continue
        try:
            # The recipes are compared field by field by verify_recipes.check_recipes.
            stored = {
                k: v for k, v in json.loads(rec.canonical).get("frozen").items() if k != "recipes"
            }
            now = frozen_definition(study, gate_id, executors="executors" in stored)
        except (ValueError, AttributeError, StagewiseError) as exc:
            report.problems.append(f"{frozen_file(gate_id)}: unreadable frozen record ({exc})")
            continue
        if canonical_json(stored) != canonical_json(now):
            report.problems.append(
                f"{STUDY_TOML}: gate {gate_id} differs from its frozen record "
                f"({frozen_file(gate_id)}, sha256 {rec.sha256})"
            )


# --------------------------------------------------------------------------- 5. re-derivation


def rederive(
    bundle: Path,
    listed: set[str],
    proven: list[tuple[int, str, dict[str, Any]]],
    report: VerifyReport,
    images: bool = True,
) -> None:
    try:
        study = load_study(bundle / STUDY_DIR)
        runs = load_runs(bundle)
        freezes = load_freezes(bundle)
        decisions = load_decisions(bundle)
        commitments_data = load_json(bundle / COMMITMENTS_JSON, report)
        if commitments_data is None:
            return
        hashes = BundleHashes(commitments_data)
    except (StagewiseError, OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        report.problems.append(f"cannot load the bundled study or records: {exc!s:.300}")
        return
    require(listed, f"{STUDY_DIR}/{study.matrix_file}", "the matrix", report)

    # 3. every bundled record against the chain's commitments
    for name in hashes.refused:
        report.problems.append(
            f"{COMMITMENTS_JSON}: holds a '{name}' map the chain never committed to; refused "
            "(ids are never renamed; masked texts prove through 'originals')"
        )
    commitments = chain.commitments(proven)
    problems = chain.compare(
        commitments,
        run_rows(runs, hashes),
        freeze_rows(freezes, hashes),
        decision_rows(decisions, hashes),
    )
    report.problems.extend(problems)
    report.commitments = len(runs) + len(freezes) + len(decisions)
    check_frozen(bundle, study, freezes, report, commitments)
    check_record_files(bundle, freezes, decisions, report)
    check_recipes(bundle, study, runs, freezes, report)
    check_runs_files(bundle, runs, report, study)

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
            expected.add(table_json(table.name))
            if table.rows:
                expected.add(table_csv(table.name))
        check_summary_ledger_rows(bundle, report)
        check_table_manifest(bundle, study, tables, report)
        check_decisions(ctx, report)
        expected |= check_figures(bundle, ctx, scratch, hashes, report, images)
        published = {f"{STUDY_DIR}/{p.relpath}" for p in ctx.published}
    # Every other file a bundle holds: the fixed ones, the study's inputs, one record per frozen
    # gate. Anything else listed in the manifest is a file no bundle holds.
    known = {
        *FIXED_FILES,
        RECIPES_JSON,
        f"{STUDY_DIR}/{study.matrix_file}",
        *(f"{STUDY_DIR}/{name}" for name in OUTSIDE_FILES),
        *(frozen_file(f.gate) for f in freezes),
        *published,
    }
    for rel in sorted(listed):
        if rel.startswith((f"{TABLES_DIR}/", f"{FIGURES_DIR}/")) and rel not in expected:
            if rel.startswith(NOT_REDERIVABLE):
                report.notes.append(f"{rel}: drawn from run logs the bundle does not hold")
            else:
                report.problems.append(f"{rel}: the bundled results do not give this file")
        elif not rel.startswith((f"{TABLES_DIR}/", f"{FIGURES_DIR}/")) and rel not in known:
            report.problems.append(f"{rel}: not a file a bundle holds")


def verify_bundle(bundle: Path, expect: str | None = None, *, images: bool = True) -> VerifyReport:
    """Check a bundle; `images=False` re-derives figure data but does not re-draw (seconds
    faster; the CLI always re-draws)."""
    report = VerifyReport()
    bundle = Path(bundle)
    if not bundle.is_dir() or not (bundle / MANIFEST_JSON).is_file():
        report.problems.append(f"{bundle}: no {MANIFEST_JSON}; not a stagewise bundle")
        return report
    members = scan_members(bundle, report)
    if members is None:
        return report
    try:
        listed = check_manifest(bundle, members, report)
        for rel in FIXED_FILES:
            require(listed, rel, "every bundle has it", report)
        check_layout_bytes(bundle, members, report)
        proven = check_events(bundle, report, expect)
        rederive(bundle, listed, proven, report, images)
    except HOSTILE_INPUT as exc:
        # Fail closed: whatever a hand-made bundle holds, verify answers with a problem, never
        # with a crash (and never with OK).
        report.problems.append(
            f"the bundle cannot be read as a stagewise bundle ({type(exc).__name__}: {exc!s:.200})"
        )
    report.unchecked[:0] = list(INFORMATIONAL)
    return report
