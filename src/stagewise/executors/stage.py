"""`stagewise run`: turn a frozen stage plan into finished runs, resumably.

The ledger holds all state. Before anything runs, the driver takes the study's run lock, puts
back every `running` row whose driver is gone (`interrupted`, to be rerun from scratch), and
refuses if another driver is alive. Each run is claimed atomically just before it starts
(pending/interrupted -> running, owned by this driver), and only its owner may close it, so a
SIGKILL of the driver (or a reboot) at any moment loses nothing and records nothing twice: the
next `stagewise run` reruns exactly the runs that had not finished.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from stagewise.errors import ExecutorError, FrozenRuleMismatch
from stagewise.executors.base import (
    Executor,
    ExecutorEvent,
    RunOutcome,
    RunProgress,
    RunStarted,
    RunTask,
    executor_class,
)
from stagewise.executors.command import (
    build_argv,
    device_batch_size,
    run_dir,
    run_env,
    supports_device_batch,
    timeout_seconds,
)
from stagewise.executors.process import read_summary
from stagewise.ledger import Ledger, RunKey
from stagewise.plan import build_plan
from stagewise.study.model import Study

LOCK_FILE = ".stagewise-run.lock"
POLL_SECONDS = 0.1  # how long the loop waits for events; bounds a freed slot's idle time
STOP_WAIT_SECONDS = 30.0  # after Ctrl-C: how long to wait for children to report


# ---------------------------------------------------------------------- owners
def _start_token(pid: int) -> str:
    """The kernel's start time of a process: with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def driver_owner() -> str:
    """ "<hostname>:<pid>:<start-token>" of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_token(os.getpid())}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this machine; None when it lives elsewhere (cannot tell)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not a driver we know of (e.g. an old or hand-written row)
    host, pid_text, token = parts
    if host != socket.gethostname():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return token == "0" or _start_token(pid) == token


@contextlib.contextmanager
def run_lock(
    study: Study, *, wait: bool = True, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """One driver per study at a time; the kernel drops the lock when the driver dies.

    With `wait`, a second driver waits for the first to end (then finds its runs finished and
    runs whatever is left); without, it is refused at once.
    """
    path = study.root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            message = f"another `stagewise run` is active on {study.root}" + (
                f" ({holder})" if holder else ""
            )
            if not wait:
                raise ExecutorError(f"{message}; wait for it or stop it first") from None
            if notify is not None:
                notify(f"{message}; waiting for it to end (Ctrl-C to give up)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, driver_owner().encode(), 0)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- reporting
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
    recovered: list[str] = field(default_factory=list)  # stale `running` rows put back
    adopted: list[str] = field(default_factory=list)  # finished by a lost driver, result kept
    pending: int = 0
    running: dict[RunKey, RunningInfo] = field(default_factory=dict)
    slots: int = 0
    retries: int = 0
    dry_run: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stopped: str | None = None  # the signal that stopped the stage, if any

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
            "awaiting_import": self.awaiting_import,
            "recovered": self.recovered,
            "adopted": self.adopted,
            "retries": self.retries,
            "stopped_by": self.stopped,
            "dry_run": self.dry_run or None,
            "wall_seconds": round(time.monotonic() - self.started, 3),
        }


# ---------------------------------------------------------------------- the driver
def _require_frozen(study: Study, ledger: Ledger, gate_id: str) -> None:
    # Imported here: the gates package sits above the executors in the layering.
    from stagewise.gates.freeze import require_frozen

    require_frozen(study, ledger, gate_id)


def require_frozen_gates(
    study: Study, ledger: Ledger, stage_id: str, *, allow_unfrozen: bool, reason: str | None
) -> list[str]:
    """Every gate pooling the stage must be frozen as written; returns the problems waived."""
    gates = study.gates_of_stage(stage_id)
    if not gates:
        return []
    problems = []
    for gate in gates:
        try:
            _require_frozen(study, ledger, gate.gate_id)
        except FrozenRuleMismatch as exc:
            if not allow_unfrozen:
                raise FrozenRuleMismatch(
                    f"stage {stage_id} cannot run: {exc} (or pass --allow-unfrozen to run "
                    "anyway; that is recorded in the ledger)"
                ) from None
            problems.append(f"{gate.gate_id}: {exc}")
    if problems:
        ledger.log_event(
            "run.allow_unfrozen",
            stage_id,
            {
                "gates": [g.gate_id for g in gates],
                "problems": problems,
                "reason": reason or "--allow-unfrozen given on the command line",
                "by": "stagewise run --allow-unfrozen",
            },
        )
    return problems


def finished_result(study: Study, key: RunKey) -> dict[str, Any] | None:
    """The summary a lost attempt completed before its driver died, if it is whole.

    A run can finish in the instant between its driver's death and the ledger write; its
    summary.json (written atomically by the runner) is then the result, and rerunning it would
    repeat a finished run. Out dirs are emptied at each attempt, so this is the last attempt's.
    """
    summary = read_summary(run_dir(study, key.stage, key.condition_id, key.seed, key.host) / "out")
    value = summary.get("val_bpb")
    if summary.get("status") != "succeeded" or not isinstance(value, int | float):
        return None
    return summary if math.isfinite(value) else None


def recover_stale(
    ledger: Ledger, me: str, study: Study | None = None
) -> tuple[list[str], list[str]]:
    """Settle `running` rows whose driver is gone: (put back to rerun, finished results adopted).

    Refuses while another driver is alive.
    """
    recovered: list[str] = []
    adopted: list[str] = []
    for key, owner in sorted(ledger.running_owners().items()):
        if owner == me:
            continue
        alive = owner_alive(owner)
        if alive:
            raise ExecutorError(
                f"{key} is being run by another live `stagewise run` ({owner}); "
                "wait for it to finish or stop it first"
            )
        if alive is None:
            raise ExecutorError(
                f"{key} is marked running by a driver on another machine ({owner}); run "
                "`stagewise run` there, or stop that driver and rerun here after it is gone"
            )
        summary = finished_result(study, key) if study is not None else None
        if summary is not None:
            ledger.finish(
                key,
                "succeeded",
                summary=summary,
                checkpoint_path=summary.get("checkpoint_path"),
                checkpoint_sha256=summary.get("checkpoint_sha256"),
                source=f"recovered from {owner}",
                owner=owner,
            )
            adopted.append(str(key))
        elif ledger.mark_interrupted(key, owner, f"driver {owner} is gone; rerun from scratch"):
            recovered.append(str(key))
    return recovered, adopted


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


def run_stage(
    study: Study,
    ledger: Ledger,
    stage_id: str,
    *,
    workers: int | None = None,
    retries: int = 0,
    dry_run: bool = False,
    allow_unfrozen: bool = False,
    reason: str | None = None,
    retry_failed: bool = False,
    reporter: Reporter | None = None,
    wait: bool = True,
    notify: Callable[[str], None] | None = None,
    executor_factory: Callable[[str, Study, list[Any], int | None], Executor] | None = None,
) -> StageState:
    """Run every claimable run of a stage; see the module docstring. Returns the final state."""
    if stage_id not in study.stages:
        raise ExecutorError(
            f"{study.study_file}: no stage {stage_id!r}; stages: {', '.join(study.stages)}"
        )
    if retries < 0:
        raise ExecutorError(f"--retries must be >= 0, but got --retries {retries}")
    reporter = reporter or NullReporter()
    stage = study.stages[stage_id]
    plan = build_plan(study, ledger).stage(stage_id)
    if plan.candidates is None:
        gate = stage.candidates.gate
        raise ExecutorError(
            f"stage {stage_id} trains what gate {gate} promotes, and {gate} is not decided "
            f"yet; apply it first (`stagewise gate {study.root} {gate}`)"
        )
    state = StageState(stage=stage_id, total=len(plan.runs), retries=retries)
    if dry_run:
        return _dry_run(study, ledger, stage_id, plan.runs, state, allow_unfrozen)
    require_frozen_gates(study, ledger, stage_id, allow_unfrozen=allow_unfrozen, reason=reason)

    me = driver_owner()
    with run_lock(study, wait=wait, notify=notify):
        ledger.ensure_runs(plan.runs)
        state.recovered, state.adopted = recover_stale(ledger, me, study)
        records = {r.key: r for r in ledger.runs(stage=stage_id)}
        queue: deque[RunKey] = deque()
        by_kind: dict[str, list[str]] = {}
        for key in _interleaved(plan.runs):
            host = study.hosts[key.host]
            record = records.get(key)
            status = record.status if record else "pending"
            if host.executor == "external":
                if status not in ("succeeded", "failed"):
                    state.awaiting_import.append(str(key))
                continue
            if status == "succeeded" or (status == "failed" and not retry_failed):
                (state.already_done if status == "succeeded" else state.previously_failed).append(
                    str(key)
                )
                continue
            queue.append(key)
            by_kind.setdefault(host.executor, [])
            if key.host not in by_kind[host.executor]:
                by_kind[host.executor].append(key.host)

        factory = executor_factory or _make_executor
        executors: dict[str, Executor] = {}
        try:
            for kind, host_names in by_kind.items():
                executors[kind] = factory(
                    kind, study, [study.hosts[h] for h in host_names], workers
                )
                for h in host_names:
                    if executors[kind].capacity(h) < 1:
                        raise ExecutorError(f"host {h} has no slot to run on")
            for kind, ex in executors.items():
                slots = sum(ex.capacity(h) for h in by_kind[kind])
                state.slots += slots if workers is None else min(slots, workers)
            state.pending = len(queue)
            reporter.begin(state)
            try:
                _drive(
                    study,
                    ledger,
                    stage,
                    queue,
                    executors,
                    state,
                    reporter,
                    me,
                    retries,
                    retry_failed,
                )
            finally:
                reporter.end(state)  # also on an error: a live view must give the terminal back
        finally:
            for ex in executors.values():
                ex.close()  # stops and waits for any child still running
            # Only after an error or a second Ctrl-C can runs be left: put them back now
            # rather than waiting for the next `stagewise run` to find their driver gone.
            for key in list(state.running):
                ledger.mark_interrupted(key, me, "driver stopped before the run ended")
    return state


def _interleaved(keys: tuple[RunKey, ...]) -> list[RunKey]:
    """Alternate hosts (and seeds) so every block makes progress from the start."""
    return sorted(keys, key=lambda k: (k.seed, k.condition_id, k.host))


def _make_executor(kind: str, study: Study, hosts: list[Any], workers: int | None) -> Executor:
    return executor_class(kind)(study, hosts, workers=workers)


def _task(
    study: Study, key: RunKey, attempt: int, owner: str, overrides: dict[str, Any]
) -> RunTask:
    stage = study.stages[key.stage]
    host = study.hosts[key.host]
    condition = study.condition(key.condition_id)
    folder = run_dir(study, key.stage, key.condition_id, key.seed, key.host)
    out_dir = folder / "out"
    argv = build_argv(study, condition, stage, key.seed, host, out_dir, overrides)
    batch = overrides.get("device_batch_size", device_batch_size(study, condition))
    return RunTask(
        key=key,
        argv=tuple(argv),
        env=run_env(study, stage, condition, key.seed, host, out_dir),
        workdir=str(study.root),
        out_dir=str(out_dir),
        log_path=str(folder / "train.log"),
        budget_seconds=stage.budget_seconds,
        timeout_seconds=timeout_seconds(study, stage.budget_seconds),
        attempt=attempt,
        owner=owner,
        device_batch_size=int(batch) if batch is not None else None,
    )


def _drive(
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
                _dispatch(
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
                    _record(ledger, event, me)
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


def _dispatch(
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
        task = _task(study, key, record.attempts, me, overrides.get(key, {}))
        state.running[key] = RunningInfo(key, record.attempts, budget_seconds=task.budget_seconds)
        try:
            ex.submit(task)
        except Exception as exc:
            state.running.pop(key, None)
            outcome = RunOutcome(
                key=key, status="failed", failure="crash", cause=f"crash: cannot submit: {exc}"
            )
            _record(ledger, outcome, me)
            state.failed.append(outcome)


def _record(ledger: Ledger, outcome: RunOutcome, owner: str) -> None:
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


def _dry_run(
    study: Study,
    ledger: Ledger,
    stage_id: str,
    keys: tuple[RunKey, ...],
    state: StageState,
    allow_unfrozen: bool,
) -> StageState:
    """What `run` would do, changing nothing."""
    frozen_problem = None
    try:
        for gate in study.gates_of_stage(stage_id):
            _require_frozen(study, ledger, gate.gate_id)
    except FrozenRuleMismatch as exc:
        frozen_problem = str(exc)
    records = {r.key: r for r in ledger.runs(stage=stage_id)}
    for key in _interleaved(keys):
        record = records.get(key)
        status = record.status if record else "pending"
        host = study.hosts[key.host]
        task = _task(study, key, (record.attempts if record else 0) + 1, "dry-run", {})
        action = (
            "awaiting import"
            if host.executor == "external" and status not in ("succeeded", "failed")
            else "skip"
            if status in ("succeeded", "failed")
            else "run"
        )
        state.dry_run.append(
            {
                "run": str(key),
                "status": status,
                "action": action,
                "executor": host.executor,
                "argv": list(task.argv),
                "timeout_seconds": task.timeout_seconds,
                "log": task.log_path,
                "frozen_problem": None if allow_unfrozen else frozen_problem,
            }
        )
    return state


__all__ = [
    "NullReporter",
    "Reporter",
    "RunningInfo",
    "StageState",
    "driver_owner",
    "owner_alive",
    "recover_stale",
    "require_frozen_gates",
    "run_stage",
]
