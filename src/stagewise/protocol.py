"""The runner <-> executor protocol, in one place: what a run prints and writes, and how it is read.

A run (our `stagewise train`, or a user's own trainer started from an argv template) talks to
the executor that started it through four things, all defined here and nowhere else:

- its **exit code** (`EXIT_CODES`: 0 succeeded, 1 failed, 2 bad input, 3 diverged, 4 OOM);
- **progress lines** on stdout, `progress: step=.. progress=.. loss=.. tok_per_s=.. mfu=..
  remaining_s=..` (`format_progress` / `parse_progress`), which drive the live view;
- autoresearch's **`---` block** at the end of stdout (`format_block` / `parse_block`), the
  result of a trainer that writes nothing else;
- **summary.json** in its out folder (`write_summary` / `read_summary`), the full result.

The JSON keeps every number unrounded (gates rank on it, and a 0.3-second run's tokens must not
round to 0.0M); the block prints the same numbers at autoresearch's precision, so the block read
back equals `round_fields(summary)`. "nan" in a block means unknown (e.g. MFU on a CPU) and reads
back as None; any other non-finite value, a malformed number or a block cut off mid-line is
refused with `BlockError` rather than read as a plausible result.

Standard library only: the executors, import and the runner all read it without torch.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.errors import StagewiseError

# ---------------------------------------------------------------------------- exit codes
SUMMARY_FILE = "summary.json"
STATUSES = ("succeeded", "diverged", "oom", "failed")
EXIT_SUCCEEDED, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_OOM = 0, 1, 2, 3, 4
EXIT_CODES = {
    "succeeded": EXIT_SUCCEEDED,
    "failed": EXIT_FAILED,
    "diverged": EXIT_DIVERGED,
    "oom": EXIT_OOM,
}

# Executors split a machine's cores between workers and tell each run its share here.
THREADS_ENV = "STAGEWISE_TORCH_THREADS"

# ---------------------------------------------------------------------------- summary fields
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
# Where our runner spends its time outside the timed loop; summary.json only (not the block).
TIMING_FIELDS = ("startup_seconds", "compile_seconds", "eval_seconds", "untimed_steps")


class BlockError(StagewiseError):
    """A `---` block that cannot be trusted: cut off, or a value that is not a finite number."""


def round_fields(values: Mapping[str, Any], *, rounded: bool = True) -> dict[str, Any]:
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


def normalize_fields(values: Mapping[str, Any]) -> dict[str, Any]:
    """What summary.json holds: `round_fields` without the rounding."""
    return round_fields(values, rounded=False)


# ---------------------------------------------------------------------------- the --- block
def format_block(summary: Mapping[str, Any]) -> str:
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


_BLOCK_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*(\S+)\s*$")
# What a writer prints: digits on both sides of a decimal point, optional exponent. "0." or
# "1e" are what a log cut off mid-number looks like, so they are refused, not read as 0.
_NUMBER = re.compile(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$")
_KINDS = dict(BLOCK_FIELDS)


def _block_value(key: str, raw: str) -> float | int | str | None:
    if raw.lower() == "nan":
        return None  # the writer's spelling of "unknown"
    if not _NUMBER.match(raw):
        if key in _KINDS:
            raise BlockError(f"`---` block: {key} must be a finite number or nan, but got {raw!r}")
        return raw  # another trainer's own key: kept as text
    value = float(raw)
    if not math.isfinite(value):
        raise BlockError(f"`---` block: {key} must be finite, but got {raw!r}")
    if _KINDS.get(key, 6) is None:
        if not value.is_integer():
            raise BlockError(f"`---` block: {key} must be an integer, but got {raw!r}")
        return int(value)
    return value


def parse_block(text: str) -> dict[str, Any]:
    """The `key: value` lines after the last `---` line (the inverse of `format_block`).

    {} when there is no block. Raises BlockError when the block is cut off (the text ends inside
    it without a final newline) or a known field holds anything but a finite number or "nan".
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        return {}
    out: dict[str, Any] = {}
    last = len(lines) - 1
    for i in range(starts[-1] + 1, len(lines)):
        match = _BLOCK_LINE.match(lines[i])
        if not match:
            if out:
                break  # the block ended: the rest is other output
            continue
        if i == last and not text.endswith(("\n", "\r")):
            raise BlockError(
                f"`---` block cut off at {lines[i].strip()!r} (no end of line): the log is "
                "truncated, so its numbers cannot be trusted"
            )
        key, raw = match.groups()
        out[key] = _block_value(key, raw)
    return out


# ---------------------------------------------------------------------------- progress lines
PROGRESS_PREFIX = "progress:"


@dataclass(frozen=True)
class Progress:
    """One progress line (None where the run did not say or said nan)."""

    step: int
    progress: float
    loss: float | None = None
    tok_per_s: float | None = None
    mfu: float | None = None
    remaining_s: float | None = None


def format_progress(p: Progress) -> str:
    def num(value: float | None, decimals: int) -> str:
        return "nan" if value is None else f"{value:.{decimals}f}"

    return (
        f"{PROGRESS_PREFIX} step={p.step} progress={p.progress:.4f} loss={num(p.loss, 6)} "
        f"tok_per_s={num(p.tok_per_s, 1)} mfu={num(p.mfu, 2)} "
        f"remaining_s={num(p.remaining_s, 1)}"
    )


def parse_progress(line: str) -> Progress | None:
    """A progress line read back; None for any other line (or one without a step)."""
    text = line.strip()
    if not text.startswith(PROGRESS_PREFIX):
        return None
    fields: dict[str, str] = {}
    for part in text[len(PROGRESS_PREFIX) :].split():
        name, sep, value = part.partition("=")
        if sep:
            fields[name] = value

    def num(name: str) -> float | None:
        try:
            value = float(fields[name])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) else None

    step = num("step")
    if step is None or not step.is_integer():
        return None
    return Progress(
        step=int(step),
        progress=num("progress") or 0.0,
        loss=num("loss"),
        tok_per_s=num("tok_per_s"),
        mfu=num("mfu"),
        remaining_s=num("remaining_s"),
    )


# ---------------------------------------------------------------------------- summary.json
def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    """Write atomically: an executor may read summary.json the moment the process exits."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SUMMARY_FILE
    tmp = path.with_name(f"{SUMMARY_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(summary), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def read_summary(out: Path) -> dict[str, Any]:
    """The summary.json in `out`, or {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def finished_summary(out: Path) -> dict[str, Any] | None:
    """The summary in `out` if it records a whole, successful result (finite val_bpb)."""
    summary = read_summary(out)
    value = summary.get("val_bpb")
    if summary.get("status") != "succeeded" or isinstance(value, bool):
        return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return summary


# ---------------------------------------------------------------------------- warm workers
# A warm worker (`python -m stagewise worker`) is our runner kept alive for one executor slot:
# it reads one request line per run on stdin, prints the run's output exactly as `stagewise
# train` would, then one done line with the exit code `stagewise train` would have returned.
# It stays for the next run only after a success; any failure ends it (a fresh one follows).
WORKER_ARGS = ("-m", "stagewise", "worker")  # after the Python interpreter
TRAIN_ARGS = ("-m", "stagewise", "train")
WORKER_READY = "@@stagewise-worker ready"
WORKER_DONE = "@@stagewise-worker exit "


def train_args(argv: Sequence[str]) -> list[str] | None:
    """The options of a `<python> -m stagewise train ...` argv (what a warm worker can run)."""
    if len(argv) < 4 or tuple(argv[1:4]) != TRAIN_ARGS:
        return None
    return list(argv[4:])


def worker_request(args: Sequence[str], env: Mapping[str, str], cwd: str) -> str:
    return json.dumps({"args": list(args), "env": dict(env), "cwd": cwd})


def parse_worker_request(line: str) -> tuple[list[str], dict[str, str], str]:
    data = json.loads(line)
    args, env, cwd = data["args"], data["env"], data["cwd"]
    if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
        raise ValueError(f"worker request: args must be a list of strings, but got {args!r}")
    if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
        raise ValueError(f"worker request: env must map names to strings, but got {env!r}")
    return args, {str(k): v for k, v in env.items()}, str(cwd)


def worker_done(code: int) -> str:
    return f"{WORKER_DONE}{code}"


def parse_worker_done(line: str) -> int | None:
    text = line.strip()
    if not text.startswith(WORKER_DONE):
        return None
    code = text[len(WORKER_DONE) :]
    return int(code) if code.lstrip("-").isdigit() else None


__all__ = [
    "BLOCK_FIELDS",
    "BLOCK_WIDTH",
    "EXIT_BAD_INPUT",
    "EXIT_CODES",
    "EXIT_DIVERGED",
    "EXIT_FAILED",
    "EXIT_OOM",
    "EXIT_SUCCEEDED",
    "PROGRESS_PREFIX",
    "STATUSES",
    "SUMMARY_FILE",
    "THREADS_ENV",
    "TIMING_FIELDS",
    "TRAIN_ARGS",
    "WORKER_ARGS",
    "WORKER_DONE",
    "WORKER_READY",
    "BlockError",
    "Progress",
    "finished_summary",
    "format_block",
    "format_progress",
    "normalize_fields",
    "parse_block",
    "parse_progress",
    "parse_worker_done",
    "parse_worker_request",
    "read_summary",
    "round_fields",
    "train_args",
    "worker_done",
    "worker_request",
    "write_summary",
]
