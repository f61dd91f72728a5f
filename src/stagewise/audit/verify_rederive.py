"""Step 5 of `stagewise verify`: what the report's own code derives from the bundled records,
compared with what the bundle holds (tables, figure data, figures, computed decisions).

Numbers agree within TOLERANCE, everything else exactly; figures byte for byte when drawn by the
same matplotlib as the bundle's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stagewise.audit.bundle_records import BundleHashes
from stagewise.audit.layout import (
    DECISIONS_JSON,
    FIGURE_MANIFEST,
    FIGURES_DIR,
    RUNS_CSV,
    RUNS_JSON,
    table_csv,
    table_json,
)
from stagewise.audit.verify_report import VerifyReport, load_json
from stagewise.ledger import RunRecord
from stagewise.ledger.masking import mask_paths, mask_value
from stagewise.report.context import ReportContext
from stagewise.report.figure_data import FIGURE_DATA
from stagewise.report.figures import matplotlib_version, render_figures
from stagewise.report.run_tables import run_row
from stagewise.report.tables import RUN_COLUMNS, Table

TOLERANCE = 1e-9
# Figures drawn from files outside the bundle (each run's loss log): listed, not re-derived.
NOT_REDERIVABLE_FIGURES = (f"{FIGURES_DIR}/learning_curve",)
# Summary rows that describe the ledger file itself, checked against the event log instead.
LEDGER_SUMMARY_ITEMS = ("ledger events", "event chain")


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
    rel = table_json(table.name)
    bundled = load_json(bundle / rel, report) if (bundle / rel).is_file() else None
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
    # Byte for byte, as the bundle writes it: every byte of a table is derived, so any edit
    # is a difference (the per-cell messages above say where, within TOLERANCE).
    expected = _as_bundled(table, bundled)
    if (bundle / rel).read_text(encoding="utf-8", errors="replace") != expected.to_json():
        report.problems.append(f"{rel}: differs from the re-derived table (byte for byte)")
    csv_rel = table_csv(table.name)
    csv_path = bundle / csv_rel
    if table.rows:
        if not csv_path.is_file():
            report.problems.append(f"{csv_rel}: missing")
        elif csv_path.read_text(encoding="utf-8", errors="replace") != expected.to_csv():
            report.problems.append(f"{csv_rel}: differs from the re-derived table")
    report.rederived += 1


def _as_bundled(table: Table, bundled: dict[str, Any]) -> Table:
    """The re-derived table as a bundle writes it: paths masked; in the summary, the rows that
    describe the ledger file taken from the bundle (checked against the event log instead)."""
    rows = [mask_value(r) for r in table.rows]
    if table.name == "summary":
        kept = {r.get("item"): r for r in bundled.get("rows", []) if isinstance(r, dict)}
        ledger_rows = {k: v for k, v in kept.items() if k in LEDGER_SUMMARY_ITEMS}
        rows = [dict(ledger_rows.get(r.get("item"), r)) for r in rows]
    return Table(
        table.name,
        mask_paths(table.title),
        list(table.columns),
        rows,
        note=mask_paths(table.note),
    )


def check_summary_ledger_rows(bundle: Path, report: VerifyReport) -> None:
    rel = table_json("summary")
    data = load_json(bundle / rel, report)
    if not isinstance(data, dict):
        return
    items = {r.get("item"): r.get("value") for r in data.get("rows", [])}
    if "ledger events" in items and items["ledger events"] != report.events:
        report.problems.append(
            f"{rel}: ledger events {items['ledger events']!r}, the event log holds {report.events}"
        )
    if "event chain" in items and items["event chain"] != "intact":
        report.problems.append(f"{rel}: event chain {items['event chain']!r}")


def check_runs_files(
    bundle: Path, runs: list[RunRecord], report: VerifyReport, study: Any = None
) -> None:
    """results/runs.csv must say exactly what results/runs.json says."""
    rows = [run_row(r, study) for r in runs]
    table = Table("runs", "Runs", list(RUN_COLUMNS), rows)
    path = bundle / RUNS_CSV
    if path.is_file() and path.read_text(encoding="utf-8", errors="replace") != table.to_csv():
        report.problems.append(f"{RUNS_CSV}: differs from {RUNS_JSON}")
    # results/runs.json itself holds exactly these rows and columns: a renamed column or an
    # extra field that no check reads is still an edit.
    from stagewise.audit.bundle import dumps

    text = (bundle / RUNS_JSON).read_text(encoding="utf-8", errors="replace")
    if text != dumps({"columns": list(RUN_COLUMNS), "runs": rows}):
        report.problems.append(f"{RUNS_JSON}: holds more or other than its runs' fields")


def check_decisions(ctx: ReportContext, report: VerifyReport) -> None:
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
        result = view.gate_result
        if result is None:
            report.problems.append(
                f"{DECISIONS_JSON}: the decision of {view.gate_id} cannot be re-derived from "
                "the bundled results"
            )
            continue
        cells = active.payload.get("cells")
        if isinstance(cells, int) and cells != len(result.cells):
            report.notes.append(
                f"decision of {view.gate_id} was taken on {cells} cells; the bundle now holds "
                f"{len(result.cells)}: proven against the chain, not re-derived"
            )
            continue
        if sorted(active.promoted) != sorted(result.promoted):
            report.problems.append(
                f"{DECISIONS_JSON}: {view.gate_id} promotes {sorted(active.promoted)}, its "
                f"frozen rule on the bundled results promotes {sorted(result.promoted)}"
            )
        verdicts = active.payload.get("verdicts")
        fresh = {c.condition_id: c.verdict.value for c in result.conditions}
        if isinstance(verdicts, dict) and verdicts != fresh:
            report.problems.append(
                f"{DECISIONS_JSON}: the verdicts recorded for {view.gate_id} differ from the "
                "re-derived ones"
            )


def _same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def check_figures(
    bundle: Path,
    ctx: ReportContext,
    scratch: Path,
    h: BundleHashes,
    report: VerifyReport,
    images: bool,
) -> set[str]:
    """Every figure's data re-derived and compared; with `images`, every figure re-drawn and
    compared byte for byte when this matplotlib is the one that drew the bundle's."""
    manifest = load_json(bundle / FIGURE_MANIFEST, report)
    manifest = manifest if isinstance(manifest, dict) else {}
    renderer = manifest.get("renderer")
    drawn_by = renderer.get("matplotlib") if isinstance(renderer, dict) else None
    if (
        not isinstance(renderer, dict)
        or not isinstance(drawn_by, str)
        or set(renderer) != {"matplotlib"}
    ):
        report.problems.append(
            f'{FIGURE_MANIFEST}: renderer must be an object {{"matplotlib": "<version>"}}, '
            f"not {renderer!r:.80}"
        )
        drawn_by = None
    check_figure_manifest(manifest, ctx, report)
    compare_images = images and bool(drawn_by) and drawn_by == matplotlib_version()
    if not compare_images:
        # The claim of another renderer is the bundle's word: the images are then listed as
        # unchecked, never passed as checked.
        report.unchecked.append(
            f"{FIGURES_DIR}/*.png, *.svg: drawn by matplotlib {drawn_by or '?'}, here "
            f"{matplotlib_version() or '?'}"
            + ("" if images else " (not re-drawn)")
            + ": images not compared; their data is"
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
        rel = f"{FIGURES_DIR}/{fresh.name}"
        expected.add(rel)
        bundled = bundle / rel
        if not bundled.is_file():
            report.problems.append(f"missing file: {rel} (the bundled results draw it)")
            continue
        if fresh.suffix in (".png", ".svg") and not compare_images:
            continue
        if fresh.suffix in (".json", ".csv"):
            # Figure data byte for byte, as the bundle writes it (paths masked).
            ok = mask_paths(
                fresh.read_text(encoding="utf-8", errors="replace")
            ) == bundled.read_text(encoding="utf-8")
        else:
            ok = _same_bytes(fresh, bundled)
        if not ok:
            report.problems.append(f"{rel}: differs from the figure re-drawn from the results")
    return expected


def check_figure_manifest(
    manifest: dict[str, Any], ctx: ReportContext, report: VerifyReport
) -> None:
    """figure_manifest.json entry by entry, as the bundle would write it from these results."""
    from stagewise.audit.bundle import figure_manifest_entry

    expected: dict[str, Any] = {}
    for family, fn in FIGURE_DATA.items():
        result = fn(ctx)
        if isinstance(result, str):
            expected[family] = figure_manifest_entry(
                family, family.replace("_", " "), False, result, ()
            )
            continue
        for data in result:
            expected[data.name] = figure_manifest_entry(
                data.name, mask_paths(data.title), True, None, data.sources
            )
    bundled = manifest.get("figures")
    if not isinstance(bundled, dict):
        report.problems.append(f"{FIGURE_MANIFEST}: no 'figures' object")
        return
    extra = set(manifest) - {"figures", "renderer"}
    if extra:
        report.problems.append(f"{FIGURE_MANIFEST}: unknown keys {sorted(extra)}")
    for name in sorted(set(expected) | set(bundled)):
        if name.startswith(tuple(n.rsplit("/", 1)[-1] for n in NOT_REDERIVABLE_FIGURES)):
            report.unchecked.append(
                f"{FIGURE_MANIFEST}: {name} (drawn from run logs the bundle does not hold)"
            )
            continue
        if bundled.get(name) != expected.get(name):
            report.problems.append(
                f"{FIGURE_MANIFEST}: entry {name!r} differs from the one the bundled results give"
            )
