"""Dispatching a stage's queue to its executors and recording what comes back.

`drive` is the driver's loop: hand every free slot its next queued run (claimed in the ledger
just before it starts, so nothing runs twice), collect the executors' events, record each
outcome (only the owner may close a run), rerun runs ended by a fault outside them (the host's
`max_retries`) and retry transient failures as asked (`--retries`), show what the executors
report about their backends (a block without a node), and on SIGINT or SIGTERM cancel
everything and wait a bounded time for the runs to report.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from types import FrameType
from typing import Any

from stagewise.errors import ClusterLost
from stagewise.executors.base import (
    FAULTS,
    Executor,
    ExecutorEvent,
    ExecutorNotice,
    RunJobState,
    RunOutcome,
    RunProgress,
    RunStarted,
    RunSubmitted,
    fault_retries,
    host_seconds,
)
from stagewise.executors.command import device_batch_size, measured_overhead, supports_device_batch
from stagewise.executors.queue import make_task
from stagewise.executors.state import Reporter, RunningInfo, StageState
from stagewise.ledger import Ledger, RunKey
from stagewise.paths import run_dir
from stagewise.study.model import Study

POLL_SECONDS = 0.1  # how long the loop waits for events; bounds a freed slot's idle time
STOP_WAIT_SECONDS = 30.0  # after Ctrl-C: how long to wait for children to report
SLOT_CHECK_SECONDS = 0.5  # how often hosts with work are checked for having no slot at all


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
    recipes: Mapping[str, tuple[str, str]] | None = None,
    replace: frozenset[RunKey] = frozenset(),
) -> None:
    """`recipes`: condition -> (sha256, canonical text) of the recipe its runs train now;
    `replace`: finished runs of a replaced recipe, trained again."""
    overrides: dict[RunKey, dict[str, Any]] = {}
    tries: dict[RunKey, int] = {}  # retries under --retries
    fault_tries: dict[RunKey, int] = {}  # reruns after a fault outside the run (max_retries)
    retry_claim: set[RunKey] = set()  # runs to claim from `failed` (a retry of ours)
    watch = _SlotWatch(study, executors)
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
                    study,
                    ledger,
                    queue,
                    executors,
                    state,
                    me,
                    overrides,
                    retry_claim,
                    retry_failed,
                    recipes,
                    replace,
                )
            elif not state.running or time.monotonic() > deadline:
                break
            if not state.running and not queue:
                break
            events: list[ExecutorEvent] = []
            if deadline is None:
                events += watch.check(queue, state)  # may end the stage (ClusterLost)
            for ex in executors.values():
                events += ex.poll(POLL_SECONDS / max(1, len(executors)))
            for event in events:
                if isinstance(event, RunStarted):
                    info = state.running.get(event.key)
                    if info is not None:
                        if event.rerun and info.attempt == event.attempt:
                            _rerun_by_executor(ledger, state, reporter, info, event)
                        info.slot = event.slot
                        info.started = time.monotonic()
                elif isinstance(event, RunProgress):
                    info = state.running.get(event.key)
                    if info is not None:
                        info.progress = event
                elif isinstance(event, ExecutorNotice):
                    if not _notice(ledger, state, event, me):
                        continue  # said already
                elif isinstance(event, RunSubmitted | RunJobState):
                    record_job(ledger, event, state)
                elif isinstance(event, RunOutcome):
                    record_outcome(ledger, event, me)
                    close_job(ledger, event)
                    state.running.pop(event.key, None)
                    note = _retry_note(
                        study, event, tries, fault_tries, retries, overrides, deadline
                    )
                    if note is not None:
                        retry_claim.add(event.key)
                        queue.appendleft(event.key)
                        state.pending += 1
                        ledger.log_event(
                            "run.retrying",
                            str(event.key),
                            {"attempt": event.attempt + 1, "after": event.cause, "note": note},
                        )
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


def _rerun_by_executor(
    ledger: Ledger, state: StageState, reporter: Reporter, info: RunningInfo, event: RunStarted
) -> None:
    """The executor started an attempt again by itself (Ray reran it after its node or worker
    died): the ledger still holds one attempt, but the user should see that a retry is going."""
    cause = f"lost: {info.slot} went away"
    note = f"{cause}; rerun on {event.slot}"
    ledger.log_event(
        "run.retrying", str(info.key), {"attempt": info.attempt, "after": cause, "note": note}
    )
    info.reruns += 1
    reporter.retry(
        state,
        RunOutcome(
            key=info.key, status="failed", failure="lost", cause=cause, attempt=info.attempt
        ),
        note,
    )


def _notice(ledger: Ledger, state: StageState, notice: ExecutorNotice, me: str) -> bool:
    """Keep a backend condition in the state while it lasts and record it for `stagewise
    status`; False when it says nothing new."""
    if notice.text is None:
        if state.notices.pop(notice.topic, None) is None:
            return False
        state.notice_since.pop(notice.topic, None)
    else:
        if state.notices.get(notice.topic) == notice.text:
            return False
        state.notices[notice.topic] = notice.text
        state.notice_since.setdefault(notice.topic, time.monotonic())
    ledger.log_event(
        "executor.notice",
        state.stage,
        {"topic": notice.topic, "text": notice.text, "host": notice.host, "owner": me},
    )
    return True


def clear_notices(ledger: Ledger, state: StageState, me: str) -> None:
    """The stage's driver is done: none of its notices holds any more."""
    for topic in list(state.notices):
        _notice(ledger, state, ExecutorNotice(topic, None), me)


class _SlotWatch:
    """Hosts that have work but no slot at all (the only node of a block died): said within
    one check, in the live view and the ledger, and the stage ended after the host's
    `node_wait_seconds` when it sets one (else the driver waits for a node to come back)."""

    def __init__(self, study: Study, executors: dict[str, Executor]) -> None:
        self.study = study
        self.executors = executors
        self.since: dict[str, float] = {}
        self.checked = 0.0

    def check(self, queue: deque[RunKey], state: StageState) -> list[ExecutorEvent]:
        now = time.monotonic()
        if now - self.checked < SLOT_CHECK_SECONDS:
            return []
        self.checked = now
        events: list[ExecutorEvent] = []
        hosts = {k.host for k in queue} | {k.host for k in state.running}
        for name in sorted(hosts | set(self.since)):
            host = self.study.hosts[name]
            ex = self.executors.get(host.executor)
            if ex is None:
                continue
            if name in hosts and ex.capacity(name) < 1:
                since = self.since.setdefault(name, now)
                limit = host_seconds(host, "node_wait_seconds", None)
                shortage = ex.shortage(name)
                if limit is not None and now - since > limit:
                    waiting = sorted(str(k) for k in state.running if k.host == name)
                    raise ClusterLost(
                        f"{shortage}, for {limit:g}s (hosts.{name}.node_wait_seconds)",
                        in_flight=tuple(waiting),
                    )
                end = (
                    f"the stage ends after {limit:g}s (node_wait_seconds)"
                    if limit is not None
                    else "waiting for one (set node_wait_seconds to end instead)"
                )
                events.append(ExecutorNotice(f"host:{name}", f"{shortage}; {end}", name))
            elif self.since.pop(name, None) is not None:
                events.append(ExecutorNotice(f"host:{name}", None, name))
        return events


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
    recipes: Mapping[str, tuple[str, str]] | None = None,
    replace: frozenset[RunKey] = frozenset(),
) -> None:
    """Start queued runs on every free slot, in queue order per host."""
    overhead: list[float | None] = []  # measured once per call, when a run starts
    for key in list(queue):
        ex = executors[study.hosts[key.host].executor]
        if ex.free_slots(key.host) < 1:
            continue
        # A run folder leading out of the study is refused before the claim: a refusal leaves
        # the ledger as it was (no `running` row left behind, claimed again on every retry).
        run_dir(study.root, key.stage, key.condition_id, key.seed, key.host)
        record = ledger.claim(
            key,
            me,
            retry_failed=retry_failed or key in retry_claim,
            recipe=(recipes or {}).get(key.condition_id),
            replace_finished=key in replace,
        )
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


def record_job(ledger: Ledger, event: RunSubmitted | RunJobState, state: StageState) -> None:
    """A cluster job's id (at once, before any wait: a restarted driver re-attaches to it) or
    its latest state (for `stagewise status` and the live view)."""
    if isinstance(event, RunSubmitted):
        ledger.record_job(
            event.key,
            event.attempt,
            event.executor,
            event.job_id,
            folder=event.folder,
            log_path=event.log_path,
        )
        text = f"{event.executor}:{event.job_id} submitted"
    else:
        ledger.update_job(
            event.key,
            event.attempt,
            event.job_id,
            state=event.state,
            reason=event.reason,
            node=event.node,
        )
        text = f"{event.job_id} {event.state}" + (f" ({event.reason})" if event.reason else "")
        if event.node:
            text += f" on {event.node}"
    info = state.running.get(event.key)
    if info is not None and (info.progress is None or isinstance(event, RunJobState)):
        info.slot = text


def close_job(ledger: Ledger, outcome: RunOutcome) -> None:
    """The attempt's outcome is in: its job (if a cluster job carried it) is collected."""
    job = ledger.open_job(outcome.key, outcome.attempt)
    if job is not None:
        ledger.update_job(outcome.key, outcome.attempt, job.job_id, ended=True)


def record_outcome(ledger: Ledger, outcome: RunOutcome, owner: str) -> None:
    summary = dict(outcome.summary) if outcome.status == "succeeded" else _numbers(outcome)
    claimed = ledger.run(outcome.key)
    if summary and claimed is not None and claimed.recipe_sha256 is not None:
        # The result names the recipe it trained (the ledger's column says the same).
        summary["recipe_sha256"] = claimed.recipe_sha256
    ledger.finish(
        outcome.key,
        outcome.status,
        cause=outcome.cause,
        summary=summary,
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
    fault_tries: dict[RunKey, int],
    retries: int,
    overrides: dict[RunKey, dict[str, Any]],
    stopping: float | None,
) -> str | None:
    """Why and how a failed attempt is retried, or None when it is not (counting it)."""
    if stopping is not None or not outcome.transient:
        return None
    key = outcome.key
    if outcome.failure in FAULTS:
        # Ended from outside the run: rerun under the host's fault policy, on every executor
        # alike; reruns the executor already made (Ray after a lost node) count against it.
        allowed = fault_retries(study.hosts[key.host])
        used = fault_tries.get(key, 0) + outcome.fault_reruns
        if used < allowed:
            fault_tries[key] = used + 1
            return f"{outcome.cause}: rerunning (fault retry {used + 1} of {allowed})"
    if tries.get(key, 0) >= retries:
        return None
    tries[key] = tries.get(key, 0) + 1
    if outcome.failure == "oom":
        host = study.hosts[key.host]
        current = overrides.get(key, {}).get(
            "device_batch_size", device_batch_size(study, study.condition(key.condition_id))
        )
        if not supports_device_batch(study, host) or current is None or int(current) < 2:
            return None
        overrides.setdefault(key, {})["device_batch_size"] = int(current) // 2
        return f"out of memory: retrying with device_batch_size {int(current) // 2}"
    return f"{outcome.failure}: retrying (attempt {tries[key] + 1} of {retries + 1})"


__all__ = [
    "POLL_SECONDS",
    "STOP_WAIT_SECONDS",
    "clear_notices",
    "dispatch",
    "drive",
    "record_job",
    "record_outcome",
]
