"""Warm workers: one long-lived `stagewise worker` process per slot, training its runs in turn.

A fresh `stagewise train` per run pays Python and torch imports, data loading and compilation
each time (10-13 s a run on a 2-core CPU, most of a short screen). A slot's warm worker pays
them once; each run still writes its own log, out folder and summary, streams its progress,
and is killed at its timeout or on cancel exactly as a process of its own would be. Killing it
takes the worker down, and so does any run that does not succeed (see cli/worker_cmd.py): the
slot's next run starts a new one. Only our own runner runs warm; a custom argv template keeps
one process per run (`process.run_task`).

The worker is started from a thread that lives as long as the slot, because the kernel's
parent-death signal (the guarantee that no worker outlives a SIGKILLed driver) fires when the
*thread* that started a child ends.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from stagewise.executors.base import ExecutorEvent, RunOutcome, RunStarted, RunTask
from stagewise.executors.process import (
    RunOutput,
    RunWatch,
    classify,
    prepare_dirs,
    run_outcome,
    spawn,
    stop_group,
)
from stagewise.protocol import (
    EXIT_BAD_INPUT,
    WORKER_ARGS,
    WORKER_READY,
    parse_worker_done,
    train_args,
    worker_request,
)


class WarmWorker:
    """The worker process of one slot, started on first use and again after it ended."""

    def __init__(self, python: str, env: Mapping[str, str], name: str) -> None:
        self.python = python
        self.env = dict(env)
        self.name = name
        self.proc: subprocess.Popen[str] | None = None
        self.runs = 0  # runs this process has started
        self._requests: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]] | None]
        self._requests = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=f"warm-{name}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """The slot's spawning thread: runs `Popen` calls and lives until `close`."""
        while (item := self._requests.get()) is not None:
            call, reply = item
            try:
                reply.put(call())
            except BaseException as exc:  # handed back to the caller's thread
                reply.put(exc)

    def _spawn(self) -> subprocess.Popen[str]:
        reply: queue.Queue[Any] = queue.Queue()
        self._requests.put((self._popen, reply))
        result = reply.get()
        if isinstance(result, BaseException):
            raise result
        proc: subprocess.Popen[str] = result
        return proc

    def _popen(self) -> subprocess.Popen[str]:
        return spawn([self.python, *WORKER_ARGS], self.env, stdin=subprocess.PIPE)

    def live(self) -> tuple[subprocess.Popen[str], bool]:
        """The running worker and whether it was just started (it must then say ready)."""
        if self.proc is not None and self.proc.poll() is None:
            return self.proc, False
        self.forget()
        self.proc = self._spawn()
        self.runs = 0
        return self.proc, True

    def forget(self, *, graceful: bool = False) -> None:
        """Drop an ended (or to-be-replaced) worker, killing it if it is still there.

        `graceful`: an idle worker is asked to end first (end of its input) and killed only if
        it does not within a second."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if graceful and proc.poll() is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
        if proc.poll() is None:
            stop_group(proc)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.close()

    def close(self) -> None:
        self.forget(graceful=True)
        self._requests.put(None)
        self._thread.join(timeout=5)


# Slot name -> its warm worker, kept for the life of the driver process: the whole-study walk
# and the demo run stage after stage on the same slots, and each stage would otherwise pay the
# workers' start again. Ended at exit (and by the parent-death signal if the driver is killed).
_POOL: dict[str, WarmWorker] = {}
_POOL_LOCK = threading.Lock()


def pooled_worker(slot: str, python: str, env: Mapping[str, str]) -> WarmWorker:
    """The slot's warm worker, replaced when the interpreter or environment changed."""
    with _POOL_LOCK:
        worker = _POOL.get(slot)
        if worker is not None and (worker.python != python or worker.env != dict(env)):
            worker.close()
            worker = None
        if worker is None:
            worker = _POOL[slot] = WarmWorker(python, env, slot)
        return worker


def close_pool() -> None:
    with _POOL_LOCK:
        workers = list(_POOL.values())
        _POOL.clear()
    for worker in workers:
        worker.close()


atexit.register(close_pool)


def can_run_warm(task: RunTask) -> bool:
    """Our own runner (`<python> -m stagewise train ...`); custom trainers run as processes."""
    return train_args(task.argv) is not None


def run_warm(
    task: RunTask,
    worker: WarmWorker,
    emit: Callable[[ExecutorEvent], None],
    *,
    cancel: threading.Event | None = None,
    slot: str = "",
) -> RunOutcome:
    """One attempt on the slot's warm worker; the same events, log and outcome as `run_task`."""
    args = train_args(task.argv)
    assert args is not None, "run_warm needs a `stagewise train` argv (see can_run_warm)"
    prepare_dirs(task)
    t0 = time.monotonic()
    with open(task.log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write(f"# {task.key} attempt {task.attempt} on {slot or '?'}\n")
        log.write("# argv: " + json.dumps(list(task.argv)) + "\n")
        log.flush()
        try:
            proc, fresh = worker.live()
        except OSError as exc:
            log.write(f"cannot start: {exc}\n")
            return classify(
                task,
                EXIT_BAD_INPUT,  # an interpreter that cannot start will not start on a retry
                f"cannot start the warm worker {worker.python!r}: {exc}",
                elapsed_seconds=time.monotonic() - t0,
                worker=slot,
            )
        worker.runs += 1
        log.write(f"# warm worker pid {proc.pid}, run {worker.runs} in it\n")
        log.flush()
        watch = RunWatch(proc, task, t0, cancel)
        assert proc.stdin is not None and proc.stdout is not None
        code: int | None = None
        output = RunOutput(log, task, t0, emit)

        def send() -> None:
            assert proc.stdin is not None
            proc.stdin.write(worker_request(args, task.env, task.workdir) + "\n")
            proc.stdin.flush()
            emit(RunStarted(task.key, task.attempt, slot, proc.pid))

        ready = not fresh
        try:
            if ready:
                send()
            for line in proc.stdout:
                if not ready and line.strip() == WORKER_READY:
                    ready = True
                    send()
                    continue
                if ready and (done := parse_worker_done(line)) is not None:
                    code = done
                    break
                output.line(line)
        except (BrokenPipeError, ValueError):
            pass  # the worker died (or was killed) before it took the request: see below
        watch.stop()
        returncode = code
        if code is None or code != 0:
            # A run that did not succeed takes its worker down (it exits by itself after
            # the done line); one that ended without a done line was killed or crashed.
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if code is None:
                returncode = proc.returncode if proc.returncode is not None else -9
            worker.forget()
        log.write(f"# exit code {returncode} after {time.monotonic() - t0:.1f}s\n")
    return run_outcome(task, returncode, output, watch, t0, slot)


def warm_env(base: Mapping[str, str], slot_env: Mapping[str, str]) -> dict[str, str]:
    """The worker's environment: the driver's, the slot's pinning, unbuffered output."""
    env = dict(base)
    env.update(slot_env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


__all__ = ["WarmWorker", "can_run_warm", "close_pool", "pooled_worker", "run_warm", "warm_env"]
