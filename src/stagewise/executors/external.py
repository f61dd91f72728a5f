"""Results from hosts the tool does not drive: CSV/JSON tables, runner summaries, autoresearch logs.

A file is validated as a whole before anything is written: one bad row refuses the file with a
message naming file, row and field, and the ledger stays exactly as it was. Importing the same
file twice changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from stagewise import bounds
from stagewise.bounds import parse_problem, read_input_text
from stagewise.errors import ImportRejected
from stagewise.executors.recipe import resolve_recipes
from stagewise.ledger import Ledger
from stagewise.ledger.schema import SUMMARY_FIELDS
from stagewise.paths import id_problem
from stagewise.plan import build_plan
from stagewise.protocol import BlockError, parse_block
from stagewise.study.model import Study

KEY_FIELDS = ("stage", "condition_id", "seed", "host")
OPTIONAL_NUMERIC = (
    "training_seconds",
    "total_seconds",
    "total_tokens_M",
    "num_params_M",
    "peak_vram_mb",
    "mfu_percent",
    "num_steps",
    "depth",
)
STATUSES = ("succeeded", "failed")
# (low, high, low is exclusive) per numeric field; counts fit SQLite's int64.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "val_bpb": (0.0, bounds.VAL_BPB_MAX, True),
    "seed": (0, bounds.SEED_MAX, False),
    "num_params_M": (0.0, bounds.MAX_NUM_PARAMS / 1e6, False),
    "mfu_percent": (0.0, 100.0 * 1000, False),  # a wrong peak-FLOPs table can exceed 100
    "depth": (1, bounds.MAX_DEPTH, False),
}
_COUNT_RANGE = (0.0, float(bounds.INT64_MAX), False)


def _json_depth_problem(text: str) -> str | None:
    """Refuse deep nesting before `json.loads` recurses into it (a 100k-deep array crashes it)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > bounds.JSON_MAX_DEPTH:
                return f"JSON nested deeper than {bounds.JSON_MAX_DEPTH} levels"
        elif char in "]}":
            depth -= 1
    return None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ImportRejected(f"duplicate key {key!r} in one JSON object")
        out[key] = value
    return out


def _read_rows(path: Path, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a results file as dicts of raw values, each with `_line` for messages."""
    text = read_input_text(path, ImportRejected, "utf-8-sig")
    try:
        return _parse_rows(path, text, defaults)
    except csv.Error as exc:
        raise ImportRejected(f"{path}: {parse_problem(exc) or exc}") from None


def _parse_rows(path: Path, text: str, defaults: dict[str, Any]) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".json":
        problem = _json_depth_problem(text)
        if problem is not None:
            raise ImportRejected(f"{path}: {problem}")
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise ImportRejected(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        except (RecursionError, ValueError) as exc:
            raise ImportRejected(f"{path}: {parse_problem(exc) or exc}") from None
        except ImportRejected as exc:
            raise ImportRejected(f"{path}: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            data = data["results"]
        if isinstance(data, dict):
            # A runner summary.json: the run key comes from its fields or from --stage/--host.
            row = {**defaults, **_from_summary(data)}
            return [{**row, "_line": 1}]
        if not isinstance(data, list):
            raise ImportRejected(f"{path}: expected a JSON list of result objects or one summary")
        rows = []
        for i, item in enumerate(data, start=1):
            if not isinstance(item, dict):
                raise ImportRejected(
                    f"{path}: item {i}: expected an object, but got {type(item).__name__}"
                )
            rows.append({**defaults, **item, "_line": i})
        if not rows:
            raise ImportRejected(f"{path}: no result rows")
        return rows
    if suffix in (".log", ".txt", ".out"):
        try:
            block = parse_block(text)
        except BlockError as exc:
            raise ImportRejected(f"{path}: {exc}") from None
        if "val_bpb" not in block:
            raise ImportRejected(f"{path}: no autoresearch `---` summary block with val_bpb found")
        return [{**defaults, **block, "status": "succeeded", "_line": 1}]
    # Newlines inside quoted fields stay in the value (splitting lines first would join them).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [f for f in (*KEY_FIELDS, "val_bpb") if f not in header and f not in defaults]
    if missing:
        raise ImportRejected(
            f"{path}: missing column(s) {', '.join(missing)}; expected "
            "stage,condition_id,seed,host,val_bpb[,status,training_seconds,...]"
        )
    rows = []
    for line_no, row in enumerate(reader, start=2):
        if None in row:
            raise ImportRejected(f"{path}: line {line_no}: more fields than header columns")
        if not any((v or "").strip() for v in row.values()):
            continue
        rows.append(
            {**defaults, **{k: v for k, v in row.items() if v not in (None, "")}, "_line": line_no}
        )
    if not rows:
        raise ImportRejected(f"{path}: no result rows")
    return rows


def _from_summary(data: dict[str, Any]) -> dict[str, Any]:
    row = {k: data[k] for k in (*KEY_FIELDS, "status", "cause", *SUMMARY_FIELDS) if k in data}
    if "condition_id" not in row and data.get("condition"):
        row["condition_id"] = data["condition"]
    row["summary"] = data
    return row


def _number(
    path: Path, row: dict[str, Any], field: str, *, integer: bool = False
) -> float | int | None:
    raw = row.get(field)
    if raw is None or raw == "":
        return None
    where = f"{path}: row {row['_line']}: {field}"
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        # JSON true is not 1.0: a boolean or a nested value is never a measurement.
        raise ImportRejected(f"{where} must be a number, but got {raw!r}")
    if isinstance(raw, str) and not raw.isascii():
        raise ImportRejected(f"{where} must be written in ASCII digits, but got {raw!r}")
    value: int | float
    try:
        value = int(raw) if isinstance(raw, int) else float(raw)
    except (TypeError, ValueError):
        raise ImportRejected(f"{where} must be a number, but got {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ImportRejected(f"{where} must be finite, but got {raw!r}")
    if integer:
        if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
            value = int(raw)  # exact, however long: the range check below judges it
        elif isinstance(value, float) and not value.is_integer():
            raise ImportRejected(f"{where} must be an integer, but got {raw!r}")
    low, high, open_low = _RANGES.get(field, _COUNT_RANGE)
    if value < low or (open_low and value == low) or value > high:
        side = ">" if open_low else ">="
        raise ImportRejected(f"{where} must be {side} {low:g} and <= {high:g}, but got {raw!r}")
    return int(value) if integer else float(value)


def validate_rows(
    study: Study, ledger: Ledger, path: Path, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    plan = build_plan(study, ledger)
    clean: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for row in rows:
        where = f"{path}: row {row['_line']}"
        for field in KEY_FIELDS:
            if row.get(field) in (None, ""):
                raise ImportRejected(f"{where}: {field} is missing")
            problem = None if field == "seed" else id_problem(str(row[field]).strip())
            if problem is not None:
                raise ImportRejected(f"{where}: {field}: {problem}")
        stage_id = str(row["stage"]).strip()
        if stage_id not in study.stages:
            raise ImportRejected(
                f"{where}: stage: unknown stage {stage_id!r}; stages: {', '.join(study.stages)}"
            )
        stage_plan = plan.stage(stage_id)
        stage = stage_plan.stage
        cid = str(row["condition_id"]).strip()
        if cid not in study.condition_ids:
            raise ImportRejected(f"{where}: condition_id: unknown condition {cid!r}")
        host = str(row["host"]).strip()
        if host not in study.hosts:
            raise ImportRejected(
                f"{where}: host: unknown host {host!r}; hosts: {', '.join(study.hosts)}"
            )
        if host not in stage.hosts:
            raise ImportRejected(f"{where}: host: stage {stage_id} does not plan host {host!r}")
        seed = _number(path, row, "seed", integer=True)
        if seed is None or seed not in stage.seeds:
            raise ImportRejected(
                f"{where}: seed: stage {stage_id} plans seeds {list(stage.seeds)}, but got {row['seed']!r}"
            )
        if stage_plan.candidates is None:
            raise ImportRejected(
                f"{where}: stage {stage_id} has no candidates yet: gate "
                f"{stage.candidates.gate} has not been decided"
            )
        if cid not in stage_plan.candidates:
            raise ImportRejected(
                f"{where}: condition_id: {cid} is not a candidate of stage {stage_id}"
            )
        status = str(row.get("status") or "succeeded").strip()
        if status not in STATUSES:
            raise ImportRejected(
                f"{where}: status: expected succeeded or failed, but got {status!r}"
            )
        clean_row: dict[str, Any] = {
            "stage": stage_id,
            "condition_id": cid,
            "seed": seed,
            "host": host,
            "status": status,
            "_line": row["_line"],
        }
        val = _number(path, row, "val_bpb")
        if status == "succeeded" and val is None:
            raise ImportRejected(f"{where}: val_bpb: a succeeded row needs a finite val_bpb")
        clean_row["val_bpb"] = val
        for field in OPTIONAL_NUMERIC:
            clean_row[field] = _number(path, row, field, integer=field in ("num_steps", "depth"))
        if status == "failed":
            clean_row["cause"] = str(row.get("cause") or "failed (imported)")
        if isinstance(row.get("summary"), dict):
            clean_row["summary"] = row["summary"]
        key = (stage_id, cid, int(seed), host)
        if key in clean:
            earlier = clean[key]
            if earlier["status"] != status or earlier["val_bpb"] != val:
                raise ImportRejected(
                    f"{where}: conflicting duplicate of row {earlier['_line']} for "
                    f"{stage_id}/{cid}/seed {seed}/{host}"
                )
            continue
        clean[key] = clean_row
    return list(clean.values())


def import_results(
    study: Study,
    ledger: Ledger,
    files: list[Path],
    defaults: dict[str, Any] | None = None,
) -> list[tuple[Path, int, int]]:
    """Validate every file first, then record each in one transaction: [(file, added, unchanged)]."""
    prepared = []
    for path in files:
        rows = _read_rows(path, dict(defaults or {}))
        prepared.append((path, validate_rows(study, ledger, path, rows)))
    # An imported result declares the recipe the study gives its condition now (the hosts the
    # tool does not drive ran what the study says): each row records that recipe's sha256.
    wanted = {row["condition_id"] for _, rows in prepared for row in rows}
    recipes = resolve_recipes(study, sorted(wanted))
    for _, rows in prepared:
        for row in rows:
            recipe = recipes[row["condition_id"]]
            row["recipe"] = (recipe.sha256, recipe.canonical)
    report = []
    for path, rows in prepared:
        source = f"import:{path.name}"
        added, unchanged = ledger.record_imports(rows, source)
        report.append((path, added, unchanged))
    return report
