"""The end of a run: autoresearch's `---` block on stdout and `summary.json` in the out folder.

The JSON keeps every number unrounded (gates rank on it, and a 0.3-second run's tokens must not
round to 0.0M); the block prints the same numbers at autoresearch's precision, so the block read
back equals `round_fields(summary)`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"
STATUSES = ("succeeded", "diverged", "oom", "failed")
EXIT_CODES = {"succeeded": 0, "failed": 1, "diverged": 3, "oom": 4}
EXIT_BAD_INPUT = 2

# (key, decimals) in autoresearch's order; None = integer.
BLOCK_FIELDS: tuple[tuple[str, int | None], ...] = (
    ("val_bpb", 6),
    ("training_seconds", 1),
    ("total_seconds", 1),
    ("peak_vram_mb", 1),
    ("mfu_percent", 2),
    ("total_tokens_M", 1),
    ("num_steps", None),
    ("num_params_M", 1),
    ("depth", None),
)
BLOCK_WIDTH = 18  # "training_seconds: " -- values line up as in autoresearch's log


def round_fields(values: dict[str, Any], *, rounded: bool = True) -> dict[str, Any]:
    """Block fields made JSON-safe: non-finite -> None (unknown, e.g. MFU on a CPU), counts ->
    int, floats at the printed precision (or unrounded with `rounded=False`)."""
    out = dict(values)
    for key, decimals in BLOCK_FIELDS:
        value = out.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            out[key] = None
        elif decimals is None:
            out[key] = int(value)
        else:
            out[key] = round(float(value), decimals) if rounded else float(value)
    return out


def normalize_fields(values: dict[str, Any]) -> dict[str, Any]:
    """What summary.json holds: `round_fields` without the rounding."""
    return round_fields(values, rounded=False)


def format_block(summary: dict[str, Any]) -> str:
    lines = ["---"]
    for key, decimals in BLOCK_FIELDS:
        value = summary.get(key)
        if value is None:
            text = "nan"
        elif decimals is None:
            text = str(int(value))
        else:
            text = f"{float(value):.{decimals}f}"
        lines.append(f"{key + ':':<{BLOCK_WIDTH}}{text}")
    return "\n".join(lines)


def parse_block(text: str) -> dict[str, float | int | None]:
    """Read the last `---` block of a log back (the inverse of `format_block`)."""
    lines = text.splitlines()
    if "---" not in lines:
        return {}
    start = len(lines) - 1 - lines[::-1].index("---")
    kinds = dict(BLOCK_FIELDS)
    result: dict[str, float | int | None] = {}
    for line in lines[start + 1 :]:
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not sep or key not in kinds:
            continue
        if value == "nan":
            result[key] = None
        else:
            result[key] = int(value) if kinds[key] is None else float(value)
    return result


def write_summary(out: Path, summary: dict[str, Any]) -> Path:
    """Write atomically: an executor may read summary.json the moment the process exits."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUMMARY_FILE
    tmp = path.with_name(f"{SUMMARY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=False, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_summary(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / SUMMARY_FILE).read_text())
    return result
