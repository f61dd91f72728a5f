"""Sanity flags of a finished run, and where its wall time went.

A run's val_bpb is ranked like any other, so what cannot mean much is flagged beside it:

- `too_short`: fewer optimizer steps than `[runner] min_steps` (its loss is still near the
  initialisation's; recipes are compared on noise);
- `over_budget`: training took more than 10% longer than the stage's time budget (one slow step
  past the budget: runs of one stage did not train for the same time);
- `slow_eval`: evaluation took longer than training (the budget is not what the run cost).

The time split reads the runner's summary (`startup_seconds`, `eval_seconds`) and the ledger's
`training_seconds` and `total_seconds`; an own trainer that reports less gets None where it said
nothing, never a guess.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stagewise.analysis.cells import RunKeyLike

OVERSHOOT_FRACTION = 0.10  # training beyond budget x 1.10 is flagged over_budget
FLAGS = ("too_short", "over_budget", "slow_eval")


class RunLike(RunKeyLike, Protocol):
    """What the checks need from a run record (the ledger's RunRecord satisfies it)."""

    @property
    def total_seconds(self) -> float | None: ...
    @property
    def num_steps(self) -> int | None: ...
    @property
    def summary_json(self) -> str | None: ...


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


@dataclass(frozen=True)
class TimeSplit:
    """Seconds of one run: start-up (process, imports, data, model), training, evaluation
    (with the checkpoint), and the run's whole wall time. None: the run did not say."""

    startup: float | None
    training: float | None
    evaluation: float | None
    total: float | None

    @property
    def other(self) -> float | None:
        """Wall time outside the three parts (checkpoint writing, untimed warm-up steps)."""
        parts = (self.startup, self.training, self.evaluation)
        if self.total is None or any(p is None for p in parts):
            return None
        return max(0.0, self.total - math.fsum(p for p in parts if p is not None))

    def to_json(self) -> dict[str, float | None]:
        return {
            "startup_seconds": self.startup,
            "training_seconds": self.training,
            "eval_seconds": self.evaluation,
            "total_seconds": self.total,
            "other_seconds": self.other,
        }


def summary_of(run: RunLike) -> dict[str, Any]:
    if not run.summary_json:
        return {}
    try:
        value = json.loads(run.summary_json)
    except (TypeError, ValueError):
        return {}
    return dict(value) if isinstance(value, dict) else {}


def time_split(run: RunLike) -> TimeSplit:
    summary = summary_of(run)
    return TimeSplit(
        startup=_number(summary.get("startup_seconds")),
        training=_number(run.training_seconds),
        evaluation=_number(summary.get("eval_seconds")),
        total=_number(run.total_seconds),
    )


@dataclass(frozen=True)
class RunCheck:
    stage: str
    condition_id: str
    seed: int
    host: str
    num_steps: int | None
    budget_seconds: float  # 0 for a token or step budget (no overshoot to measure)
    split: TimeSplit
    flags: tuple[str, ...]
    notes: tuple[str, ...]  # one human line per flag, in the order of `flags`

    @property
    def run(self) -> str:
        return f"{self.stage}/{self.condition_id}/seed{self.seed}/{self.host}"

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "stage": self.stage,
            "condition_id": self.condition_id,
            "seed": self.seed,
            "host": self.host,
            "num_steps": self.num_steps,
            "budget_seconds": self.budget_seconds,
            **self.split.to_json(),
            "flags": list(self.flags),
            "notes": list(self.notes),
        }


def check_run(run: RunLike, budget_seconds: float, min_steps: int) -> RunCheck:
    """The flags of one succeeded run (see the module doc)."""
    split = time_split(run)
    flags: list[str] = []
    notes: list[str] = []
    steps = run.num_steps
    if steps is not None and min_steps > 0 and steps < min_steps:
        flags.append("too_short")
        notes.append(f"trained {steps} optimizer steps, fewer than min_steps = {min_steps}")
    if (
        budget_seconds > 0
        and split.training is not None
        and split.training > budget_seconds * (1 + OVERSHOOT_FRACTION)
    ):
        flags.append("over_budget")
        notes.append(
            f"trained {split.training:.1f}s on a {budget_seconds:g}s budget "
            f"({split.training / budget_seconds:.1f}x)"
        )
    if (
        split.evaluation is not None
        and split.training is not None
        and split.evaluation > split.training
    ):
        flags.append("slow_eval")
        notes.append(
            f"evaluated for {split.evaluation:.1f}s after {split.training:.1f}s of training"
        )
    return RunCheck(
        run.stage,
        run.condition_id,
        run.seed,
        run.host,
        steps,
        budget_seconds,
        split,
        tuple(flags),
        tuple(notes),
    )


def check_runs(
    runs: Iterable[RunLike],
    budgets: Mapping[str, float],
    min_steps: int,
    stages: Iterable[str] | None = None,
) -> list[RunCheck]:
    """The checks of every succeeded run (of `stages`, when given), in ledger order."""
    wanted = set(stages) if stages is not None else None
    return [
        check_run(r, budgets.get(r.stage, 0.0), min_steps)
        for r in runs
        if r.status == "succeeded" and (wanted is None or r.stage in wanted)
    ]


def flagged(checks: Iterable[RunCheck], flag: str | None = None) -> list[RunCheck]:
    return [c for c in checks if (c.flags if flag is None else flag in c.flags)]


def flag_counts(checks: Iterable[RunCheck]) -> dict[str, int]:
    counts = dict.fromkeys(FLAGS, 0)
    for c in checks:
        for f in c.flags:
            counts[f] = counts.get(f, 0) + 1
    return counts


__all__ = [
    "FLAGS",
    "OVERSHOOT_FRACTION",
    "RunCheck",
    "RunLike",
    "TimeSplit",
    "check_run",
    "check_runs",
    "flag_counts",
    "flagged",
    "summary_of",
    "time_split",
]
