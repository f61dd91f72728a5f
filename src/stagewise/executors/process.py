"""One run as one child process: start it, keep its log, stream its progress, classify its end.

Both executors call `run_task` (the local one in a thread per slot, the Ray one inside its
remote task). The child gets its own session (a Ctrl-C on the terminal reaches the driver only,
which then stops the children itself) and, on Linux, a parent-death signal: if the driver is
SIGKILLed the kernel kills its children too, so no orphan keeps writing results that the next
`stagewise run` would rerun anyway.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from stagewise.executors.base import (
    ExecutorEvent,
    RunOutcome,
    RunProgress,
    RunStarted,
    RunTask,
)
from stagewise.ledger.records import RunKey
from stagewise.protocol import (
    EXIT_BAD_INPUT,
    EXIT_DIVERGED,
    EXIT_OOM,
    PROGRESS_PREFIX,
    BlockError,
    parse_block,
    read_summary,
    write_summary,
)
from stagewise.protocol import parse_progress as parse_progress_line

TAIL_LINES = 200  # kept in memory for the `---` block and the ledger's log tail
LEDGER_TAIL_CHARS = 4000
TERM_WAIT_SECONDS = 5.0  # SIGTERM, then SIGKILL if the group is still there after this

_PR_SET_PDEATHSIG = 1
LIBC: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError):
        LIBC = ctypes.CDLL("libc.so.6", use_errno=True)

# Signals a process raises on itself (a fault of its own code or libraries: segfault, abort,
# bus error, ...): a crash of the run. Any other signal came from outside (SIGKILL by a user or
# the OOM killer, SIGTERM, a lost node): the run is `killed`, a fault the driver reruns.
SELF_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSYS}
)

_OOM_TEXT = re.compile(r"out of memory|OutOfMemoryError|CUDA error: out of memory", re.I)


def die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """preexec_fn: ask the kernel to SIGKILL this child when the thread that started it dies."""
    if LIBC is not None:
        LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(
    argv: list[str], env: Mapping[str, str], *, stdin: int, cwd: str | Path | None = None
) -> subprocess.Popen[str]:
    """A child with its output and errors as one line-buffered text stream, in its own session
    (our Ctrl-C and process-group signals are the executor's to pass on), dying with us (Linux)."""
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        start_new_session=True,
        preexec_fn=die_with_parent if LIBC is not None else None,
    )


def parse_progress(line: str, key: RunKey) -> RunProgress | None:
    """A runner's progress line as the event of run `key` (None for any other line)."""
    p = parse_progress_line(line)
    if p is None:
        return None
    return RunProgress(key, p.step, p.progress, p.loss, p.tok_per_s, p.mfu, p.remaining_s)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def classify(
    task: RunTask,
    returncode: int | None,
    output_tail: str,
    *,
    timed_out: bool = False,
    cancelled: str | None = None,
    elapsed_seconds: float = 0.0,
    startup_seconds: float | None = None,
    worker: str | None = None,
) -> RunOutcome:
    """How an attempt ended, from its exit code, summary.json and the tail of its output.

    Pure apart from reading `task.out_dir/summary.json` (and, for a run killed at its deadline,
    writing the timeout into it), so every case is testable by hand.
    """
    summary = read_summary(Path(task.out_dir))
    block_problem = ""
    try:
        block = parse_block(output_tail)
    except BlockError as exc:
        block, block_problem = {}, str(exc)
    common: dict[str, Any] = dict(
        key=task.key,
        log_tail=output_tail[-LEDGER_TAIL_CHARS:],
        log_path=task.log_path,
        returncode=returncode,
        elapsed_seconds=elapsed_seconds,
        startup_seconds=startup_seconds,
        worker=worker,
        attempt=task.attempt,
    )

    def failed(kind: str, cause: str) -> RunOutcome:
        return RunOutcome(
            status="failed", failure=kind, cause=f"{kind}: {cause}", summary=summary, **common
        )

    if cancelled is not None:
        return RunOutcome(status="interrupted", cause=cancelled, summary=summary, **common)
    if timed_out:
        grace = task.timeout_seconds - task.budget_seconds
        detail = (
            f"still running after {task.timeout_seconds:.0f}s (budget "
            f"{task.budget_seconds:g}s + grace {grace:.0f}s); killed; allow more with "
            "[runner] grace_seconds in study.toml"
        )
        if summary:
            # The runner heard SIGTERM as an interrupt and wrote that; the run was killed for
            # its deadline, and every record (summary.json, ledger, CLI) says the same cause.
            summary = {**summary, "status": "failed", "cause": f"timeout: {detail}"}
            with contextlib.suppress(OSError):
                write_summary(Path(task.out_dir), summary)
        return failed("timeout", detail)
    detail = str(summary.get("cause") or "") or _last_line(output_tail)
    status = summary.get("status")
    if status == "diverged" or returncode == EXIT_DIVERGED:
        return failed("diverged", detail or "loss became NaN or exploded")
    if status == "oom" or returncode == EXIT_OOM:
        return failed("oom", detail or "out of memory")
    if returncode is not None and returncode < 0:
        try:
            sig: signal.Signals | None = signal.Signals(-returncode)
        except ValueError:
            sig = None
        name = sig.name if sig is not None else f"signal {-returncode}"
        if sig in SELF_SIGNALS:
            return failed("crash", f"ended by {name}" + (f": {detail}" if detail else ""))
        return failed("killed", f"ended by {name}, a signal from outside the run")
    if returncode == EXIT_BAD_INPUT:
        return failed("bad_input", detail or "the runner refused its arguments (exit 2)")
    if returncode != 0:
        if _OOM_TEXT.search(output_tail):
            return failed("oom", detail or "out of memory")
        return failed("crash", f"exit code {returncode}" + (f": {detail}" if detail else ""))
    if not summary and block:
        summary = dict(block)
    if status not in (None, "succeeded"):
        return failed("crash", detail or f"runner reported status {status!r}")
    if not summary:
        if block_problem:
            return failed("no_result", f"exit 0 but no summary.json, and {block_problem}")
        return failed("no_result", "exit 0 but no summary.json and no `---` block in the output")
    if "val_bpb" in summary and not _finite(summary["val_bpb"]):
        value = summary["val_bpb"]
        return failed("diverged", f"val_bpb is {'nan' if value is None else value}")
    if not _finite(summary.get("val_bpb")):
        return failed("no_result", "the summary has no val_bpb")
    checkpoint = summary.get("checkpoint_path")
    sha = summary.get("checkpoint_sha256")
    return RunOutcome(
        status="succeeded",
        summary=summary,
        checkpoint_path=str(checkpoint) if checkpoint else None,
        checkpoint_sha256=str(sha) if sha else None,
        **common,
    )


def prepare_dirs(task: RunTask) -> None:
    """Empty the out dir (reruns start from scratch) and keep an earlier attempt's log aside."""
    out = Path(task.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    log = Path(task.log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():
        previous = max(1, task.attempt - 1)
        log.replace(log.with_name(f"{log.stem}.attempt{previous}{log.suffix}"))


def stop_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM the child's process group, SIGKILL it if it is still there a little later."""
    for sig, wait in ((signal.SIGTERM, TERM_WAIT_SECONDS), (signal.SIGKILL, 2.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class RunOutput:
    """Follows a run's output: every line to its log file, the last lines kept for the `---`
    block, progress lines parsed and emitted; the first one also dates the run's start-up."""

    def __init__(
        self, log: IO[str], task: RunTask, t0: float, emit: Callable[[ExecutorEvent], None]
    ) -> None:
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.startup: float | None = None
        self._log, self._key, self._t0, self._emit = log, task.key, t0, emit

    def line(self, line: str) -> None:
        self._log.write(line)
        self.tail.append(line)
        if line.startswith(PROGRESS_PREFIX):
            self._log.flush()
            progress = parse_progress(line, self._key)
            if progress is not None:
                if self.startup is None:
                    self.startup = time.monotonic() - self._t0
                self._emit(progress)

    def text(self) -> str:
        return "".join(self.tail)


class RunWatch:
    """Stops a run's process group when the stage is cancelled or the run passes its deadline,
    from a thread of its own (the caller is blocked reading the run's output)."""

    def __init__(
        self,
        proc: subprocess.Popen[str],
        task: RunTask,
        t0: float,
        cancel: threading.Event | None,
    ) -> None:
        self.timed_out = False
        self.cancelled: str | None = None
        self._finished = threading.Event()
        self._proc, self._cancel = proc, cancel
        self._deadline = t0 + task.timeout_seconds
        self._thread = threading.Thread(target=self._watch, name=f"watch-{task.key}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._finished.wait(0.1):
            if self._cancel is not None and self._cancel.is_set():
                self.cancelled = str(getattr(self._cancel, "reason", "") or "interrupted")
                stop_group(self._proc)
                return
            if time.monotonic() > self._deadline:
                self.timed_out = True
                stop_group(self._proc)
                return

    def stop(self) -> None:
        """The run has ended: stop watching."""
        self._finished.set()
        self._thread.join()


def run_task(
    task: RunTask,
    emit: Callable[[ExecutorEvent], None],
    *,
    cancel: threading.Event | None = None,
    extra_env: Mapping[str, str] | None = None,
    slot: str = "",
) -> RunOutcome:
    """Run one attempt to its end; emits RunStarted and RunProgress, returns the outcome.

    `cancel` set -> the child is stopped and the outcome is `interrupted`. The run is killed
    after `task.timeout_seconds`. The full output goes to `task.log_path`.
    """
    prepare_dirs(task)
    env = dict(os.environ)
    env.update(task.env)
    env.update(extra_env or {})
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.monotonic()
    with open(task.log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write(f"# {task.key} attempt {task.attempt} on {slot or '?'}\n")
        log.write("# argv: " + json.dumps(list(task.argv)) + "\n")
        log.flush()
        try:
            proc = spawn(list(task.argv), env, stdin=subprocess.DEVNULL, cwd=task.workdir)
        except OSError as exc:
            log.write(f"cannot start: {exc}\n")
            return classify(
                task,
                EXIT_BAD_INPUT,  # a command that cannot start will not start on a retry either
                f"cannot start {task.argv[0]!r}: {exc}",
                elapsed_seconds=time.monotonic() - t0,
                worker=slot,
            )
        emit(RunStarted(task.key, task.attempt, slot, proc.pid))
        watch = RunWatch(proc, task, t0, cancel)
        output = RunOutput(log, task, t0, emit)
        assert proc.stdout is not None
        for line in proc.stdout:
            output.line(line)
        proc.stdout.close()  # one fd per run: a long stage must not leak them
        returncode = proc.wait()
        watch.stop()
        log.write(f"# exit code {returncode} after {time.monotonic() - t0:.1f}s\n")
    if watch.timed_out or watch.cancelled or returncode < 0:
        # A killed child may leave grandchildren holding its group; make sure they go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return run_outcome(task, returncode, output, watch, t0, slot)


def run_outcome(
    task: RunTask,
    returncode: int | None,
    output: RunOutput,
    watch: RunWatch,
    t0: float,
    slot: str,
) -> RunOutcome:
    """How a fresh or warm run ended, from its exit code, its output and its watchdog."""
    return classify(
        task,
        returncode,
        output.text(),
        timed_out=watch.timed_out,
        cancelled=watch.cancelled,
        elapsed_seconds=time.monotonic() - t0,
        startup_seconds=output.startup,
        worker=slot,
    )


__all__ = [
    "classify",
    "die_with_parent",
    "parse_progress",
    "prepare_dirs",
    "read_summary",
    "run_task",
    "spawn",
    "stop_group",
]
