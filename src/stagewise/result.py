"""Report your own trainer's result to stagewise: three lines, no torch, no other dependency.

    from stagewise.result import run_facts, write_result

    facts = run_facts()  # where to write, the seed, the budget, the condition (from the env)
    ...train for facts.budget_seconds (or facts.token_budget tokens) with seed facts.seed...
    write_result(val_bpb=1.234, training_seconds=58.2, total_tokens_M=3.1, num_steps=400)

For learning curves in the report, log the training loss as you go (same folder, same format
the built-in runner writes, `train_loss.csv`):

    with LossCurveWriter() as curve:      # $STAGEWISE_OUT/train_loss.csv
        for step in ...:
            curve.log(step, loss, training_seconds=spent, tokens=seen)

The executor starts an argv trainer with the run's facts in environment variables (the names
below) and reads `summary.json` from the run's out folder when it exits; `write_result` writes
that file atomically in the format the executor expects (stagewise.protocol), and prints the
autoresearch `---` block too, so the run's log reads like any other. A trainer that prints only
the `---` block is also accepted; summary.json is the fuller, unrounded record.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.errors import RunnerError
from stagewise.protocol import format_block, normalize_fields, round_fields, write_summary

# The run's facts, set by the executors for every argv trainer (and for our runner).
ENV_OUT = "STAGEWISE_OUT"
ENV_SEED = "STAGEWISE_SEED"
ENV_BUDGET_SECONDS = "STAGEWISE_BUDGET_SECONDS"
ENV_TOKEN_BUDGET = "STAGEWISE_TOKEN_BUDGET"
ENV_STEP_BUDGET = "STAGEWISE_STEP_BUDGET"
ENV_CONDITION_ID = "STAGEWISE_CONDITION_ID"
ENV_STAGE = "STAGEWISE_STAGE"
ENV_HOST = "STAGEWISE_HOST"
ENV_NAMES = (
    ENV_OUT,
    ENV_SEED,
    ENV_BUDGET_SECONDS,
    ENV_TOKEN_BUDGET,
    ENV_STEP_BUDGET,
    ENV_CONDITION_ID,
    ENV_STAGE,
    ENV_HOST,
)


LOSS_LOG = "train_loss.csv"  # the runner's per-step loss log; the report reads it from out/
LOSS_COLUMNS = ("step", "loss", "training_seconds", "tokens")


@dataclass(frozen=True)
class RunFacts:
    """What stagewise told this run. Exactly one budget is set when started by stagewise."""

    out: Path | None
    seed: int | None
    budget_seconds: float | None
    token_budget: int | None
    step_budget: int | None
    condition_id: str | None
    stage: str | None
    host: str | None


def _number(env: dict[str, str] | os._Environ[str], name: str, kind: type) -> Any:
    text = env.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise RunnerError(f"environment variable {name}={text!r}: expected a number") from None
    if not math.isfinite(value) or value < 0:
        raise RunnerError(f"environment variable {name}={text!r}: expected a finite number >= 0")
    if kind is int:
        if not value.is_integer():
            raise RunnerError(f"environment variable {name}={text!r}: expected an integer")
        return int(value)
    return value


def run_facts(env: dict[str, str] | None = None) -> RunFacts:
    """The run's facts from the environment (None for what is not set: a run by hand)."""
    source = os.environ if env is None else env
    out = source.get(ENV_OUT)
    return RunFacts(
        out=Path(out) if out else None,
        seed=_number(source, ENV_SEED, int),
        budget_seconds=_number(source, ENV_BUDGET_SECONDS, float),
        token_budget=_number(source, ENV_TOKEN_BUDGET, int),
        step_budget=_number(source, ENV_STEP_BUDGET, int),
        condition_id=source.get(ENV_CONDITION_ID) or None,
        stage=source.get(ENV_STAGE) or None,
        host=source.get(ENV_HOST) or None,
    )


def write_result(
    val_bpb: float, *, out: str | Path | None = None, echo: bool = True, **fields: Any
) -> Path:
    """Write the run's summary.json (val_bpb plus any numbers you measured) and return its path.

    `out` defaults to $STAGEWISE_OUT. Known fields (training_seconds, total_tokens_M, num_steps,
    num_params_M, depth, peak_vram_mb, mfu_percent, total_seconds) are checked as numbers; other
    keys are kept as given (JSON values). A NaN or infinite val_bpb is recorded as a diverged run,
    which never passes a gate; write it anyway, then exit non-zero.
    """
    target = Path(out) if out is not None else run_facts().out
    if target is None:
        raise RunnerError(
            f"write_result: no out folder; pass out=... or set {ENV_OUT} "
            "(stagewise sets it for every run it starts)"
        )
    if isinstance(val_bpb, bool) or not isinstance(val_bpb, int | float):
        raise RunnerError(f"write_result: val_bpb must be a number, but got {val_bpb!r}")
    for key in ("status", "cause"):
        if key in fields:
            raise RunnerError(f"write_result: {key!r} is set by write_result, not by the caller")
    finite = math.isfinite(val_bpb)
    summary: dict[str, Any] = {
        "status": "succeeded" if finite else "diverged",
        "cause": None if finite else f"val_bpb is {val_bpb}",
        "val_bpb": float(val_bpb) if finite else None,
        **fields,
    }
    try:
        summary = normalize_fields(summary)
    except (TypeError, ValueError) as exc:
        raise RunnerError(f"write_result: a known field is not a number: {exc}") from None
    path = write_summary(target, summary)
    if echo:
        print(format_block(round_fields(summary)), file=sys.stdout, flush=True)
    return path


class LossCurveWriter:
    """Append one row per logged step to `<out>/train_loss.csv`, the file the report draws.

    Columns: step, loss, training_seconds (seconds of training so far, the x axis of a time
    budget) and tokens (tokens trained on so far, the x axis of a token budget); leave either
    out and the report derives it where it can. Each row is flushed, so a run killed at its
    deadline keeps the curve it had. A NaN or infinite loss is written (it marks divergence)
    and skipped by the report.
    """

    def __init__(self, out: str | Path | None = None) -> None:
        target = Path(out) if out is not None else run_facts().out
        if target is None:
            raise RunnerError(
                f"LossCurveWriter: no out folder; pass out=... or set {ENV_OUT} "
                "(stagewise sets it for every run it starts)"
            )
        target.mkdir(parents=True, exist_ok=True)
        self.path = target / LOSS_LOG
        self._fh = self.path.open("w", encoding="utf-8", newline="")
        self._fh.write(",".join(LOSS_COLUMNS) + "\n")
        self._fh.flush()
        self._last_step: int | None = None

    def log(
        self,
        step: int,
        loss: float,
        *,
        training_seconds: float | None = None,
        tokens: float | None = None,
    ) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise RunnerError(f"LossCurveWriter.log: step must be an integer >= 0, got {step!r}")
        if self._last_step is not None and step <= self._last_step:
            raise RunnerError(
                f"LossCurveWriter.log: steps must increase, got {step} after {self._last_step}"
            )
        for name, value in (("training_seconds", training_seconds), ("tokens", tokens)):
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise RunnerError(
                    f"LossCurveWriter.log: {name} must be a finite number >= 0, got {value!r}"
                )
        self._last_step = step
        cells = [
            str(step),
            repr(float(loss)),
            "" if training_seconds is None else repr(float(training_seconds)),
            "" if tokens is None else repr(float(tokens)),
        ]
        self._fh.write(",".join(cells) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> LossCurveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "ENV_BUDGET_SECONDS",
    "ENV_CONDITION_ID",
    "ENV_HOST",
    "ENV_NAMES",
    "ENV_OUT",
    "ENV_SEED",
    "ENV_STAGE",
    "ENV_STEP_BUDGET",
    "ENV_TOKEN_BUDGET",
    "LOSS_LOG",
    "LossCurveWriter",
    "RunFacts",
    "run_facts",
    "write_result",
]
