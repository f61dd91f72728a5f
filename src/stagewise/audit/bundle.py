"""`stagewise bundle`: the audit bundle another person can check without trusting us.

The files and where each lies are declared once, in `stagewise.audit.layout`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.audit.layout import (
    COMMITMENTS_JSON,
    DECISIONS_JSON,
    EVENTS_JSON,
    FIGURE_MANIFEST,
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
    figure_files,
    frozen_file,
    table_csv,
    table_json,
)
from stagewise.audit.scrub import Scrubber
from stagewise.errors import BundleError
from stagewise.ledger import Ledger, integrity, sha256_text
from stagewise.ledger.integrity import LedgerHashes
from stagewise.ledger.masking import mask_paths
from stagewise.ledger.store import field_hashes
from stagewise.paths import safe_join
from stagewise.report.context import ReportContext, report_context
from stagewise.report.figures import matplotlib_version, render_figures
from stagewise.report.tables import RUN_COLUMNS, Table, all_tables, runs_table
from stagewise.snapshot import StudySnapshot
from stagewise.study import load_study
from stagewise.study.model import Study

README = """\
# Audit bundle of the stagewise study `{name}`

Produced by `stagewise bundle`. Everything a reviewer needs to check the study's decisions:

| path | what |
|---|---|
| `study/study.toml`, `study/{matrix}` | the study file (stages, hosts, gates and their rules) and the candidate matrix |
| `study/published/` | published summary tables shipped with the study: shown as published, never recomputed |
| `results/runs.csv`, `results/runs.json` | every run: stage, condition, seed, host block, status, cause, val_bpb and the other summary numbers |
| `frozen/<gate>.json` | every freeze and amendment of a gate: the canonical JSON that was hashed (since format 2 with the resolved recipe of every condition), its sha256, the UTC time, the post-hoc flag |
| `recipes/recipes.json` | the resolved recipe of every run (matrix row, `[runner]` settings, trainer, metric, data hashes) under its sha256; each run in `results/` names the one it trained |
| `decisions/decisions.json` | every decision: computed by the tool or taken outside it (`manual`), with reasons |
| `tables/` | every table of the report as CSV and JSON (gate analyses, cells, sensitivity, budget, ...) |
| `figures/` | every figure as PNG and SVG |
| `ledger/events.json` | the ledger's hash-chained event log (each event's fields with their sha256), the chain head, and the result of checking the chain when this bundle was made |
| `ledger/commitments.json` | for each record whose texts are shown masked or withheld, the digest of its texts as written (the chain binds it to the shown texts) |
| `table_manifest.json`, `figure_manifest.json` | each table and figure -> the bundled files it comes from and the command that produced it |
| `MANIFEST.json`, `MANIFEST.csv` | path, size in bytes and sha256 of every other file |

## How to verify

    stagewise verify <this folder> --expect {head}

re-hashes every file against `MANIFEST.json` (missing, extra and changed files, and paths that
leave the bundle, are reported), re-links the event chain and compares its head with the one you
expect (the chain head of this bundle is `{head}`; compare it with the one published with the
study), checks every run, frozen rule and decision against what the chain committed to, and
re-derives every table (decisions, verdicts, sensitivity, budget, agreement, figure data) from
`results/runs.json`, the frozen rules and `study/study.toml` with the same code that produced them
(numbers must agree within 1e-9). It exits with status 1 on any difference. Without stagewise,
`sha256sum` over the files listed in `MANIFEST.csv` checks integrity.

## What verify does not check

`README.md` (this description), the published summaries under `study/published/` (shown as
published, never recomputed), and the figure images (PNG, SVG) when this stagewise's matplotlib
is not the one that drew them (their data files are always checked). `stagewise verify` lists
them under "informational (not checked)". Everything else is proven against the event chain or
re-derived from what is.

## Scrubbing

Paths, log files, checkpoints, run owners and raw run summaries are left out. In every other
text any absolute path reads `<path>/<file name>` (the same on every machine: the chain commits
to that masked form), the home folder `<home>`, the user name `<user>` and the machine's name
`<host>`, as whole tokens. A text the chain commits to (a cause, a source, a reason) that names
the user or the machine is withheld whole: it reads `<withheld sha256:...>`, the hash of its
masked form, which still proves against the chain. Declared ids (host blocks, conditions,
stages, gates) are never scrubbed, even one named like the machine or the user.

Counts: {runs} runs, {tables} tables, {figures} figures, {events} ledger events, chain {chain}.
"""


@dataclass
class BundleResult:
    out: Path
    files: list[str] = field(default_factory=list)
    tables: int = 0
    figures: int = 0
    leaks: list[str] = field(default_factory=list)
    chain_head: str = ""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"


class _Writer:
    def __init__(self, out: Path, scrub: Scrubber) -> None:
        self.out = out
        self.scrub = scrub

    def text(self, rel: str, text: str) -> None:
        path = safe_join(self.out, rel)  # ids become file names here: never outside --out
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.scrub.text(text), encoding="utf-8")

    def json(self, rel: str, value: Any) -> None:
        self.text(rel, dumps(self.scrub.value(value)))

    def committed_json(self, rel: str, value: Any) -> None:
        """Records the chain commits to, already shown as committed (`Scrubber.committed`):
        written as they are, since any further scrubbing would break their proof."""
        path = safe_join(self.out, rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(value), encoding="utf-8")


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise BundleError(f"--out {out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST_JSON).is_file():
        raise BundleError(
            f"--out {out}: folder is not empty and holds no bundle; choose a new folder"
        )


def _partial(out: Path) -> Path:
    """Where a bundle is written before it replaces `out` in one rename: beside it, so an
    interrupted bundle (SIGKILL, full disk) leaves `out` as it was, never half written."""
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


def _clear_partials(out: Path) -> None:
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished bundle into place; an earlier bundle there is replaced whole."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def scrub_table(table: Table, scrub: Scrubber) -> Table:
    # Cells hold committed texts (causes, reasons) as the records show them, so verify's
    # tables re-derived from the records agree with these.
    table.rows = [scrub.committed_record(r) for r in table.rows]
    table.title = scrub.text(table.title)
    table.note = scrub.text(table.note)
    return table


def _freeze_records(ctx: ReportContext) -> dict[str, Any]:
    out = {}
    for view in ctx.gates:
        if not view.freezes:
            continue
        records = []
        for rec in view.freezes:
            canonical = mask_paths(rec.canonical)
            records.append(
                {
                    "kind": rec.kind,
                    "sha256": rec.sha256,
                    "canonical": canonical,
                    # Informational: verify proves a masked canonical text through the chain
                    # (digest format 2), never because this flag says so.
                    "canonical_scrubbed": canonical != rec.canonical,
                    "frozen_at": rec.frozen_at,
                    "post_hoc": rec.post_hoc,
                    "reason": rec.reason,
                    "results_at_freeze": rec.results_at_freeze,
                    "event_seq": rec.event_seq,
                }
            )
        out[view.gate_id] = {
            "gate": view.gate_id,
            "current_sha256": records[-1]["sha256"],
            "records": records,
        }
    return out


def bundled_recipes(texts: Mapping[str, str]) -> dict[str, Any]:
    """The recipes/recipes.json object: sha256 -> resolved recipe, from the ledger's texts."""
    return {"recipes": {sha: json.loads(text) for sha, text in sorted(texts.items())}}


def _decisions(ctx: ReportContext) -> list[dict[str, Any]]:
    # event_seq ties each record to the event that committed to it (verify checks that).
    return [{**d.as_dict(), "event_seq": d.event_seq} for view in ctx.gates for d in view.decisions]


def _events(ctx: ReportContext, scrub: Scrubber, head: str) -> dict[str, Any]:
    events = []
    for ev in ctx.events:
        if ev.format >= 3:
            # The chain commits to the masked form of each field: shown as committed.
            payload = {k: scrub.committed(v, json_context=True) for k, v in ev.payload.items()}
            subject = scrub.committed(ev.subject)
        else:
            payload = scrub.value(ev.payload)
            subject = scrub.text(ev.subject)
        entry: dict[str, Any] = {
            "seq": ev.seq,
            "ts": ev.ts,
            "kind": ev.kind,
            "subject": subject,
            "payload": payload,
            "prev_hash": ev.prev_hash,
            "hash": ev.hash,
            "scrubbed": payload != ev.payload or subject != ev.subject,
            "format": ev.format,
        }
        if ev.format >= 2:
            # The hash covers these, not the texts: a scrubbed field still proves the link.
            entry["subject_sha256"] = sha256_text(ev.subject)
            entry["payload_sha256"] = field_hashes(ev.payload)
        events.append(entry)
    return {
        "chain_ok_at_bundle_time": not ctx.chain_problems,
        "chain_problems": scrub.value(ctx.chain_problems),
        "chain_head": head,
        "events": events,
    }


def _commitments(ctx: ReportContext, scrub: Scrubber) -> dict[str, Any]:
    """The digest of the texts as written of every record whose shown texts were masked or
    withheld: the chain binds it to the shown texts (ledger.integrity), so it proves them."""
    h = LedgerHashes()
    originals: dict[str, str] = {}

    def changed(*fields: Any) -> bool:
        return any(scrub.committed(f) != f for f in fields)

    for run in ctx.runs:
        if changed(run.cause, run.source):
            key = integrity.key_digest(run.stage, run.condition_id, run.seed, run.host, h.id)
            originals[integrity.run_record_key(key)] = integrity.run_originals(run, h)
    for view in ctx.gates:
        for f in view.freezes:
            if changed(f.reason, f.results_at_freeze):
                key = integrity.freeze_record_key(f.event_seq)
                originals[key] = integrity.freeze_originals(f, h)
        for d in view.decisions:
            if changed(d.reason, d.source, d.payload):
                key = integrity.decision_record_key(d.event_seq)
                originals[key] = integrity.decision_originals(d, h)
    # `renamed` and `texts` stay empty: ids are never renamed, and a map from shown to
    # committed text that the chain does not bind is never trusted (verify refuses one).
    return {"renamed": {}, "texts": {}, "originals": dict(sorted(originals.items()))}


RUNS_MANIFEST_ENTRY: dict[str, Any] = {
    "title": "Runs",
    "files": [RUNS_CSV, RUNS_JSON],
    "sources": ["the study's ledger (ledger.sqlite), scrubbed"],
    "command": "stagewise bundle STUDY --out OUT",
    "published_summary": False,
}


def table_manifest_entry(table: Table, matrix_file: str) -> dict[str, Any]:
    """A table's entry in table_manifest.json (verify re-derives it the same way)."""
    sources_fix = {"study/matrix": f"{STUDY_DIR}/{matrix_file}", "frozen/": "frozen/*.json"}
    files = [table_json(table.name)]
    if table.rows:
        # An empty table is JSON only: a CSV of a lone header line says nothing.
        files.insert(0, table_csv(table.name))
    return {
        "title": table.title,
        "files": files,
        "sources": [sources_fix.get(s, s) for s in table.sources],
        "command": table.command or "stagewise report STUDY",
        "published_summary": table.published,
    }


def figure_manifest_entry(
    name: str, title: str, drawn: bool, skipped: str | None, sources: Iterable[str]
) -> dict[str, Any]:
    """A figure's entry in figure_manifest.json (verify re-derives it the same way)."""
    return {
        "title": title,
        "files": figure_files(name) if drawn else [],
        "skipped": skipped,
        "sources": list(sources),
        "command": f"stagewise report STUDY (figure registry: {name})",
    }


def study_ids(study: Study) -> list[str]:
    return [
        *study.hosts,
        *study.condition_ids,
        *study.stages,
        *study.gates,
    ]


def write_manifests(out: Path) -> list[dict[str, Any]]:
    entries = []
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        rel = path.relative_to(out).as_posix()
        if rel in MANIFESTS:
            continue
        entries.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    (out / MANIFEST_JSON).write_text(
        dumps({"algorithm": "sha256", "files": entries}), encoding="utf-8"
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["path", "bytes", "sha256"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    (out / MANIFEST_CSV).write_text(buf.getvalue(), encoding="utf-8")
    return entries


def write_bundle(folder: Path, out: Path) -> BundleResult:
    study = load_study(folder)
    final = Path(out)
    _check_out(final)
    with Ledger.open(study.root, create=False) as ledger:
        # A bundle of a ledger whose chain or tables were altered would launder the alteration.
        snap = StudySnapshot.read_intact(study, ledger)
    ctx = report_context(snap)
    head = snap.head
    final.parent.mkdir(parents=True, exist_ok=True)
    _clear_partials(final)
    out = _partial(final)
    out.mkdir()
    try:
        result = _write_into(study, folder, ctx, head, snap.recipe_texts, out)
        _publish(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    result.out = final
    return result


def _write_into(
    study: Study,
    folder: Path,
    ctx: ReportContext,
    head: str,
    recipe_texts: Mapping[str, str],
    out: Path,
) -> BundleResult:
    scrub = Scrubber([study.root, folder], ids=study_ids(study))
    w = _Writer(out, scrub)

    # The study as written, scrubbed (a path in [runner] data = "..." becomes <path>/...).
    w.text(STUDY_TOML, study.study_file.read_text(encoding="utf-8"))
    w.text(
        f"{STUDY_DIR}/{study.matrix_file}",
        (study.root / study.matrix_file).read_text(encoding="utf-8"),
    )
    for pub in ctx.published:
        w.text(f"{STUDY_DIR}/{pub.relpath}", pub.path.read_text(encoding="utf-8"))
    for name in OUTSIDE_FILES:
        if (study.root / name).is_file():
            w.text(f"{STUDY_DIR}/{name}", (study.root / name).read_text(encoding="utf-8"))

    runs = runs_table(ctx)
    runs.rows = [scrub.committed_record(r) for r in runs.rows]
    w.committed_json(RUNS_JSON, {"columns": list(RUN_COLUMNS), "runs": runs.rows})
    (out / RUNS_CSV).write_text(runs.to_csv(), encoding="utf-8")

    for gate_id, record in _freeze_records(ctx).items():
        record["records"] = [scrub.committed_record(r) for r in record["records"]]
        w.committed_json(frozen_file(gate_id), record)
    w.json(RECIPES_JSON, bundled_recipes(recipe_texts))
    decisions = [scrub.committed_record(d) for d in _decisions(ctx)]
    w.committed_json(DECISIONS_JSON, {"decisions": decisions})
    # Events are shown as committed (format 3) or scrubbed field by field (older formats).
    w.committed_json(EVENTS_JSON, _events(ctx, scrub, head))
    # Not through the scrubber: it holds only hashes.
    w.committed_json(COMMITMENTS_JSON, _commitments(ctx, scrub))

    table_manifest: dict[str, Any] = {}
    tables = [t for t in all_tables(ctx) if t.name != "runs"]
    for table in tables:
        scrub_table(table, scrub)
        entry = table_manifest_entry(table, study.matrix_file)
        if table.rows:
            w.text(entry["files"][0], table.to_csv())
        w.text(entry["files"][-1], table.to_json())
        table_manifest[table.name] = entry
    table_manifest["runs"] = dict(RUNS_MANIFEST_ENTRY)
    w.json(TABLE_MANIFEST, {"tables": table_manifest})

    figures = render_figures(ctx, out / "figures")
    figure_manifest = {}
    for fig in figures:
        for text_file in [p for p in (fig.svg,) if p is not None] + list(fig.data):
            # SVG and figure data are text: the same safety net as every other text file.
            text_file.write_text(
                scrub.text(text_file.read_text(encoding="utf-8")), encoding="utf-8"
            )
        figure_manifest[fig.name] = figure_manifest_entry(
            fig.name, fig.title, fig.png is not None, fig.skipped, fig.sources
        )
    w.json(
        FIGURE_MANIFEST,
        {"figures": figure_manifest, "renderer": {"matplotlib": matplotlib_version()}},
    )

    drawn = sum(1 for f in figures if f.png is not None)
    w.text(
        README_MD,
        README.format(
            name=study.name,
            matrix=study.matrix_file,
            runs=len(ctx.runs),
            tables=len(tables) + 1,
            figures=drawn,
            events=len(ctx.events),
            chain="intact" if not ctx.chain_problems else "BROKEN",
            head=head,
        ),
    )
    entries = write_manifests(out)
    result = BundleResult(
        out, [e["path"] for e in entries], len(tables) + 1, drawn, chain_head=head
    )
    for entry in entries:
        path = out / entry["path"]
        if path.suffix == ".png":
            continue
        for leak in scrub.leaks(path.read_text(encoding="utf-8", errors="replace")):
            result.leaks.append(f"{entry['path']}: contains {leak!r}")
    return result


def canonical_hash_ok(record: dict[str, Any]) -> bool:
    return bool(sha256_text(str(record["canonical"])) == record["sha256"])
