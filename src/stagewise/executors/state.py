"""The live state of a stage being run, and the Reporter protocol that shows it.

`StageState` is what the driver updates as events arrive, what a progress view reads and what
`run_stage` returns (its `as_dict()` is the `stagewise run --json` output). A view is any object
with the four `Reporter` methods, all called on the driver's thread; the terminal views live
with the CLI (`stagewise.cli.progress`), so the executors never draw anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from stagewise.executors.base import ExecutorEvent, RunOutcome, RunProgress
from stagewise.ledger import RunKey


class Reporter(Protocol):
    """What the driver tells the progress view; every method is called on the main thread."""

    def begin(self, state: StageState) -> None: ...
    def event(self, state: StageState, event: ExecutorEvent) -> None: ...
    def retry(self, state: StageState, outcome: RunOutcome, note: str) -> None: ...
    def end(self, state: StageState) -> None: ...


class NullReporter:
    def begin(self, state: StageState) -> None:
        pass

    def event(self, state: StageState, event: ExecutorEvent) -> None:
        pass

    def retry(self, state: StageState, outcome: RunOutcome, note: str) -> None:
        pass

    def end(self, state: StageState) -> None:
        pass


@dataclass
class RunningInfo:
    key: RunKey
    attempt: int
    slot: str = ""
    started: float = field(default_factory=time.monotonic)
    progress: RunProgress | None = None
    budget_seconds: float = 0.0
    reruns: int = 0  # times the executor started this attempt again after a fault


@dataclass
class StageState:
    """Live counts of a stage, read by the progress view and returned as the result."""

    stage: str
    total: int = 0
    already_done: list[str] = field(default_factory=list)  # finished before this invocation
    done: list[RunOutcome] = field(default_factory=list)
    failed: list[RunOutcome] = field(default_factory=list)
    interrupted: list[RunOutcome] = field(default_factory=list)
    awaiting_import: list[str] = field(default_factory=list)
    previously_failed: list[str] = field(default_factory=list)
    # finished runs of a recipe replaced since (an amended freeze), trained again
    retrained: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # stale `running` rows put back
    adopted: list[str] = field(default_factory=list)  # finished by a lost driver, result kept
    reattached: list[str] = field(default_factory=list)  # a lost driver's cluster jobs, followed
    pending: int = 0
    running: dict[RunKey, RunningInfo] = field(default_factory=dict)
    slots: int = 0
    retries: int = 0
    dry_run: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stopped: str | None = None  # the signal that stopped the stage, if any
    # Backend conditions reported by the executors while they last (topic -> text), e.g. a
    # block with no live node; shown by the live view and in `--json`.
    notices: dict[str, str] = field(default_factory=dict)
    notice_since: dict[str, float] = field(default_factory=dict)

    @property
    def finished_count(self) -> int:
        return len(self.done) + len(self.failed)

    def eta_seconds(self) -> float | None:
        """Rough time to the end: queued runs over the slots at the mean duration so far."""
        durations = [o.elapsed_seconds for o in self.done + self.failed if o.elapsed_seconds]
        runs = list(self.running.values())
        if not durations and not runs:
            return None
        if durations:
            per_run = sum(durations) / len(durations)
        else:
            per_run = max(r.budget_seconds for r in runs) * 1.2
        now = time.monotonic()
        remaining = [
            max(0.0, per_run - (now - r.started))
            if r.progress is None or r.progress.remaining_s is None
            else r.progress.remaining_s
            for r in runs
        ]
        tail = max(remaining, default=0.0)
        return tail + (self.pending * per_run) / max(1, self.slots)

    def as_dict(self) -> dict[str, Any]:
        def row(o: RunOutcome) -> dict[str, Any]:
            return {
                "run": str(o.key),
                "condition_id": o.key.condition_id,
                "seed": o.key.seed,
                "host": o.key.host,
                "status": o.status,
                "cause": o.cause,
                "val_bpb": o.val_bpb,
                "seconds": round(o.elapsed_seconds, 3),
                "startup_seconds": (
                    round(o.startup_seconds, 3) if o.startup_seconds is not None else None
                ),
                "worker": o.worker,
                "attempt": o.attempt,
                "log": o.log_path,
            }

        return {
            "stage": self.stage,
            "total": self.total,
            "succeeded": [row(o) for o in self.done],
            "failed": [row(o) for o in self.failed],
            "interrupted": [row(o) for o in self.interrupted],
            "already_finished": self.already_done,
            "previously_failed": self.previously_failed,
            "retrained": self.retrained,
            "awaiting_import": self.awaiting_import,
            "recovered": self.recovered,
            "adopted": self.adopted,
            "reattached": self.reattached,
            "retries": self.retries,
            "stopped_by": self.stopped,
            "dry_run": self.dry_run or None,
            "notices": dict(self.notices),
            "wall_seconds": round(time.monotonic() - self.started, 3),
        }


__all__ = ["NullReporter", "Reporter", "RunningInfo", "StageState"]
