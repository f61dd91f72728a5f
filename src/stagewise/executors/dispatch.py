"""Dispatching a stage's queue to its executors and recording what comes back.

`drive` is the driver's loop: hand every free slot its next queued run (claimed in the ledger
just before it starts, so nothing runs twice), collect the executors' events, record each
outcome (only the owner may close a run), retry transient failures as asked, and on SIGINT or
SIGTERM cancel everything and wait a bounded time for the runs to report.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

from stagewise.executors.base import (
    Executor,
    ExecutorEvent,
    RunOutcome,
    RunProgress,
    RunStarted,
)
from stagewise.executors.command import device_batch_size, measured_overhead, supports_device_batch
from stagewise.executors.queue import make_task
from stagewise.executors.state import Reporter, RunningInfo, StageState
from stagewise.ledger import Ledger, RunKey
from stagewise.study.model import Study

POLL_SECONDS = 0.1  # how long the loop waits for events; bounds a freed slot's idle time
STOP_WAIT_SECONDS = 30.0  # after Ctrl-C: how long to wait for children to report


class _Stop:
    """SIGINT/SIGTERM -> a flag the loop checks (only installable on the main thread)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the children
        self.signal = signal.Signals(signum).name

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def drive(
    study: Study,
    ledger: Ledger,
    stage: Any,
    queue: deque[RunKey],
    executors: dict[str, Executor],
    state: StageState,
    reporter: Reporter,
    me: str,
    retries: int,
    retry_failed: bool,
) -> None:
    overrides: dict[RunKey, dict[str, Any]] = {}
    tries: dict[RunKey, int] = {}
    retry_claim: set[RunKey] = set()  # runs to claim from `failed` (a retry of ours)
    with _Stop() as stop:
        deadline: float | None = None
        while queue or state.running:
            if stop.signal and deadline is None:
                state.stopped = stop.signal
                deadline = time.monotonic() + STOP_WAIT_SECONDS
                for ex in executors.values():
                    ex.cancel_all(f"interrupted by {stop.signal}")
            if deadline is None:
                dispatch(
                    study, ledger, queue, executors, state, me, overrides, retry_claim, retry_failed
                )
            elif not state.running or time.monotonic() > deadline:
                break
            if not state.running and not queue:
                break
            events: list[ExecutorEvent] = []
            for ex in executors.values():
                events += ex.poll(POLL_SECONDS / max(1, len(executors)))
            for event in events:
                if isinstance(event, RunStarted):
                    info = state.running.get(event.key)
                    if info is not None:
                        info.slot = event.slot
                        info.started = time.monotonic()
                elif isinstance(event, RunProgress):
                    info = state.running.get(event.key)
                    if info is not None:
                        info.progress = event
                elif isinstance(event, RunOutcome):
                    record_outcome(ledger, event, me)
                    state.running.pop(event.key, None)
                    note = _retry_note(study, event, tries, retries, overrides, deadline)
                    if note is not None:
                        tries[event.key] = tries.get(event.key, 0) + 1
                        retry_claim.add(event.key)
                        queue.appendleft(event.key)
                        state.pending += 1
                        reporter.retry(state, event, note)
                        continue
                    if event.status == "succeeded":
                        state.done.append(event)
                    elif event.status == "failed":
                        state.failed.append(event)
                    else:
                        state.interrupted.append(event)
                reporter.event(state, event)
        # Anything still running after the wait is abandoned: put it back for a rerun.
        for key in list(state.running):
            ledger.mark_interrupted(key, me, f"interrupted by {state.stopped}; not stopped in time")
            state.interrupted.append(
                RunOutcome(key=key, status="interrupted", cause=f"interrupted by {state.stopped}")
            )
            state.running.pop(key)


def dispatch(
    study: Study,
    ledger: Ledger,
    queue: deque[RunKey],
    executors: dict[str, Executor],
    state: StageState,
    me: str,
    overrides: dict[RunKey, dict[str, Any]],
    retry_claim: set[RunKey],
    retry_failed: bool,
) -> None:
    """Start queued runs on every free slot, in queue order per host."""
    overhead: list[float | None] = []  # measured once per call, when a run starts
    for key in list(queue):
        ex = executors[study.hosts[key.host].executor]
        if ex.free_slots(key.host) < 1:
            continue
        record = ledger.claim(key, me, retry_failed=retry_failed or key in retry_claim)
        queue.remove(key)
        state.pending -= 1
        retry_claim.discard(key)
        if record is None:
            continue  # finished or taken meanwhile: nothing to do, nothing recorded twice
        if not overhead:
            overhead.append(measured_overhead(study, ledger.runs(status="succeeded")))
        task = make_task(study, key, record.attempts, me, overrides.get(key, {}), overhead[0])
        state.running[key] = RunningInfo(key, record.attempts, budget_seconds=task.budget_seconds)
        try:
            ex.submit(task)
        except Exception as exc:
            state.running.pop(key, None)
            outcome = RunOutcome(
                key=key, status="failed", failure="crash", cause=f"crash: cannot submit: {exc}"
            )
            record_outcome(ledger, outcome, me)
            state.failed.append(outcome)


def record_outcome(ledger: Ledger, outcome: RunOutcome, owner: str) -> None:
    ledger.finish(
        outcome.key,
        outcome.status,
        cause=outcome.cause,
        summary=dict(outcome.summary) if outcome.status == "succeeded" else _numbers(outcome),
        log_path=outcome.log_path,
        checkpoint_path=outcome.checkpoint_path,
        checkpoint_sha256=outcome.checkpoint_sha256,
        log_tail=outcome.log_tail or None,
        source=f"executor:{outcome.worker}" if outcome.worker else "executor",
        owner=owner,
    )


def _numbers(outcome: RunOutcome) -> dict[str, Any]:
    """A failed run keeps what it measured (steps, seconds) but never a val_bpb."""
    return {k: v for k, v in outcome.summary.items() if k != "val_bpb"}


def _retry_note(
    study: Study,
    outcome: RunOutcome,
    tries: dict[RunKey, int],
    retries: int,
    overrides: dict[RunKey, dict[str, Any]],
    stopping: float | None,
) -> str | None:
    """Why and how a failed attempt is retried, or None when it is not."""
    if stopping is not None or not outcome.transient or tries.get(outcome.key, 0) >= retries:
        return None
    key = outcome.key
    if outcome.failure == "oom":
        host = study.hosts[key.host]
        current = overrides.get(key, {}).get(
            "device_batch_size", device_batch_size(study, study.condition(key.condition_id))
        )
        if not supports_device_batch(study, host) or current is None or int(current) < 2:
            return None
        overrides.setdefault(key, {})["device_batch_size"] = int(current) // 2
        return f"out of memory: retrying with device_batch_size {int(current) // 2}"
    return f"{outcome.failure}: retrying (attempt {tries.get(key, 0) + 2} of {retries + 1})"


__all__ = ["POLL_SECONDS", "STOP_WAIT_SECONDS", "dispatch", "drive", "record_outcome"]
