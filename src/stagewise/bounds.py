"""Numeric bounds at the boundary: what a study file, a matrix or an imported result may hold.

Every number that enters the tool is checked against these once, where it is read, so that no
later layer meets a value it cannot compute with (an overflow in a gate, a loop over a billion
layers, a seed the runner's RNGs refuse). The limits are generous: they exist to keep the
arithmetic finite and the loops short, not to second-guess a recipe. docs/study-files.md
states them.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stagewise.defaults import (
    DEVICE_BATCH_SIZE,
    EVAL_TOKENS,
    HEAD_DIM,
    SEQUENCE_LEN,
    VOCAB_SIZE,
    model_dim_for,
)

# SQLite INTEGER and NumPy/torch int64: counts (tokens, steps, seconds) must fit.
INT64_MAX = 2**63 - 1
# NumPy's legacy seeding takes 0 .. 2**32-1; the runner, the ledger and the plan all accept it.
SEED_MAX = 2**32 - 1
# A uniform guess over a 8192-token vocabulary scores ~13 bits per byte on one-byte tokens; a
# result 100x worse than chance is a broken log, not a measurement (divergence ends in NaN).
VAL_BPB_MAX = 100.0
# A budget beyond a year of wall clock is a typo (or 1.7e308), never a plan.
BUDGET_MAX_SECONDS = 366 * 86400.0
# The runner allocates the whole model on one device; a trillion parameters is far past any
# single GPU, so a larger matrix row can only be a mistake (and would make `params` spin).
MAX_NUM_PARAMS = 10**12
MAX_DEPTH = 10_000
MAX_WIDTH = 2**20  # aspect_ratio, head_dim and the resulting model_dim
MAX_VOCAB = 2**24
MAX_TOKENS = 2**40  # sequence_len, batch sizes, eval_tokens: a terabyte of token ids
MAX_LR = 1e3
# An imported JSON file nests results at most a few levels; deep nesting is an attack on the
# parser (a 100k-deep array exhausts Python's recursion), so it is refused before parsing.
JSON_MAX_DEPTH = 64
MAX_WORKERS = 4096

Kind = Literal["int", "float", "str", "bool", "budget", "seed"]


@dataclass(frozen=True)
class Option:
    """One runner option as a study may set it ([runner] or a matrix column)."""

    kind: Kind
    low: float | None = None
    high: float | None = None


# The options of `stagewise train` (tests/study/test_bounds.py keeps this in step with the CLI),
# plus the executor's own [runner] keys.
RUNNER_OPTIONS: dict[str, Option] = {
    "depth": Option("int", 1, MAX_DEPTH),
    "aspect_ratio": Option("int", 1, MAX_WIDTH),
    "head_dim": Option("int", 2, MAX_WIDTH),
    "window_pattern": Option("str"),
    "sequence_len": Option("int", 1, MAX_TOKENS),
    "vocab_size": Option("int", 261, MAX_VOCAB),
    "total_batch_size": Option("int", 1, MAX_TOKENS),
    "device_batch_size": Option("int", 1, MAX_TOKENS),
    "matrix_lr": Option("float", 0, MAX_LR),
    "embedding_lr": Option("float", 0, MAX_LR),
    "unembedding_lr": Option("float", 0, MAX_LR),
    "scalar_lr": Option("float", 0, MAX_LR),
    "adam_beta1": Option("float", 0, 1),
    "adam_beta2": Option("float", 0, 1),
    "weight_decay": Option("float", 0, MAX_LR),
    "warmup_ratio": Option("float", 0, 1),
    "warmdown_ratio": Option("float", 0, 1),
    "final_lr_frac": Option("float", 0, 1),
    "time_budget": Option("budget"),
    "token_budget": Option("budget"),
    "step_budget": Option("budget"),
    "eval_tokens": Option("int", 1, MAX_TOKENS),
    "eval_batch_size": Option("int", 1, MAX_TOKENS),
    "seed": Option("seed"),
    "deterministic": Option("bool"),
    "steps": Option("int", 1, INT64_MAX),
    "device": Option("str"),
    "compile": Option("bool"),
    "data": Option("str"),
    "out": Option("str"),
    "condition_id": Option("str"),
}
EXECUTOR_OPTIONS: dict[str, Option] = {
    "grace_seconds": Option("float", 0, BUDGET_MAX_SECONDS),
    "startup_seconds": Option("float", 0, BUDGET_MAX_SECONDS),
    "timeout_seconds": Option("float", 0, BUDGET_MAX_SECONDS),  # token/step-budget runs
    "warm_workers": Option("bool"),  # false: one fresh process per run, as custom trainers
    "min_steps": Option("int", 0, INT64_MAX),  # fewer optimizer steps: the run is too_short
}


def number_problem(
    value: object, *, integer: bool = False, low: float | None = None, high: float | None = None
) -> str | None:
    """Why `value` is not an acceptable number (booleans are not numbers), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        kind = "an integer" if integer else "a number"
        return f"expected {kind}, but got {value!r}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, but got {value!r}"
    if integer and not (isinstance(value, int) or float(value).is_integer()):
        return f"expected an integer, but got {value!r}"
    if low is not None and value < low:
        return f"expected a number >= {low:g}, but got {value!r}"
    if high is not None and value > high:
        return f"expected a number <= {high:g}, but got {value!r}"
    return None


def option_problem(name: str, value: object) -> str | None:
    """Why `value` is not valid for runner option `name`, or None (unknown names: None)."""
    option = RUNNER_OPTIONS.get(name) or EXECUTOR_OPTIONS.get(name)
    if option is None:
        return None
    if option.kind == "str":
        if not isinstance(value, str):
            return f"expected a string, but got {value!r}"
        return None
    if option.kind == "bool":
        if not isinstance(value, bool):
            return f"expected true or false, but got {value!r}"
        return None
    if option.kind == "budget":
        return None  # the stage sets it; budget_units parses what a user writes
    if option.kind == "seed":
        return seed_problem(value)
    return number_problem(value, integer=option.kind == "int", low=option.low, high=option.high)


def seed_problem(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"expected an integer seed in 0..{SEED_MAX}, but got {value!r}"
    if not 0 <= value <= SEED_MAX:
        return f"expected a seed in 0..{SEED_MAX}, but got {value}"
    return None


def approx_num_params(depth: int, aspect_ratio: int, head_dim: int, vocab_size: int) -> int:
    """The runner's parameter count to within its small terms, in closed form (no loop)."""
    model_dim = model_dim_for(depth, aspect_ratio, head_dim)
    value_layers = (depth + 1) // 2  # value embeddings on alternating layers incl. the last
    return 12 * depth * model_dim**2 + (2 + value_layers) * vocab_size * model_dim


def model_size_problem(
    depth: object,
    aspect_ratio: object,
    head_dim: object = HEAD_DIM,
    vocab_size: object = VOCAB_SIZE,
) -> str | None:
    """Why this model shape cannot be a runner model (each dimension, then the total), or None."""
    for name, value in (
        ("depth", depth),
        ("aspect_ratio", aspect_ratio),
        ("head_dim", head_dim),
        ("vocab_size", vocab_size),
    ):
        high = MAX_VOCAB if name == "vocab_size" else RUNNER_OPTIONS[name].high
        problem = number_problem(value, integer=True, low=1, high=high)
        if problem is not None:
            return f"{name}: {problem}"
    assert isinstance(depth, int | float) and isinstance(aspect_ratio, int | float)
    assert isinstance(head_dim, int | float) and isinstance(vocab_size, int | float)
    total = approx_num_params(int(depth), int(aspect_ratio), int(head_dim), int(vocab_size))
    if total > MAX_NUM_PARAMS:
        return (
            f"depth={depth}, aspect_ratio={aspect_ratio} gives about {total:.3g} parameters; "
            f"the runner allocates at most {MAX_NUM_PARAMS:.0e} on one device"
        )
    return None


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def eval_rows(eval_tokens: int, device_batch_size: int, sequence_len: int) -> int:
    """The validation rows val_bpb is computed over: whole training batches within eval_tokens."""
    return eval_tokens // (device_batch_size * sequence_len) * device_batch_size


def eval_batch_problem(
    eval_batch_size: object,
    eval_tokens: object = EVAL_TOKENS,
    device_batch_size: object = DEVICE_BATCH_SIZE,
    sequence_len: object = SEQUENCE_LEN,
) -> str | None:
    """Why an explicit evaluation batch cannot be used, or None. It must divide the rows, so
    that every batch size reads the same rows (and val_bpb does not depend on it)."""
    values = (eval_batch_size, eval_tokens, device_batch_size, sequence_len)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None  # each is checked on its own; only the relation is checked here
    assert isinstance(eval_tokens, int) and isinstance(device_batch_size, int)
    assert isinstance(sequence_len, int) and isinstance(eval_batch_size, int)
    rows = eval_rows(eval_tokens, device_batch_size, sequence_len)
    if rows == 0 or rows % eval_batch_size == 0:
        return None
    near = [d for d in divisors(rows) if d <= 4 * eval_batch_size][-6:]
    return (
        f"must divide the {rows} evaluation rows (eval_tokens // (device_batch_size * "
        f"sequence_len) batches of device_batch_size rows), so that every batch size reads the "
        f"same rows; nearby choices: {', '.join(map(str, near))}"
    )


__all__ = [
    "BUDGET_MAX_SECONDS",
    "EXECUTOR_OPTIONS",
    "INT64_MAX",
    "JSON_MAX_DEPTH",
    "MAX_DEPTH",
    "MAX_LR",
    "MAX_NUM_PARAMS",
    "MAX_TOKENS",
    "MAX_VOCAB",
    "MAX_WIDTH",
    "MAX_WORKERS",
    "RUNNER_OPTIONS",
    "SEED_MAX",
    "VAL_BPB_MAX",
    "Option",
    "approx_num_params",
    "divisors",
    "eval_batch_problem",
    "eval_rows",
    "model_size_problem",
    "number_problem",
    "option_problem",
    "seed_problem",
]


# ---------------------------------------------------------------------------- input files
# A study file, a matrix, a results file: text a person wrote or a tool exported. Larger than
# this is not one of them (and reading /dev/zero or a FIFO must end, with one line).
MAX_INPUT_BYTES = 256 * 1024 * 1024


def read_input_text(path: Path, error: type[Exception], encoding: str = "utf-8") -> str:
    """The text of a user's input file, refused unless it is a regular file of bounded size
    (a device, a FIFO or a folder named as a results file is a one-line error, not a hang)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise error(f"{path}: {kind}; expected a text file")
    if st.st_size > MAX_INPUT_BYTES:
        raise error(f"{path}: {st.st_size} bytes, over the {MAX_INPUT_BYTES}-byte input limit")
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_INPUT_BYTES:
        raise error(f"{path}: over the {MAX_INPUT_BYTES}-byte input limit")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_problem(exc: BaseException) -> str | None:
    """What a TOML/JSON/CSV parser's non-syntax failure means, in words (None: not one)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    if isinstance(exc, ValueError) and "digits" in str(exc):
        return f"a number too long to read ({str(exc).split(';')[0]})"
    if type(exc).__name__ == "Error" and type(exc).__module__ == "_csv":
        return f"{exc} (a CSV field that long is not a value)"
    return None
