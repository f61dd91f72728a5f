"""What runs inside a Slurm job: the runs of one pack, one after another, on its allocation.

submitit pickles a `PackedRuns` with the pack's `RunTask`s and calls it on the compute node.
Each run goes through the same code as on the local executor (our runner on a warm worker kept
for the whole pack, a custom trainer as a process of its own), writes its log where the local
executor would, and, the moment it ends, its outcome file beside it (`slurm_support`): the
driver reads results from those files, one run at a time, and never needs the job to finish.

`PackedRuns` is submitit `Checkpointable`: on the USR2 that Slurm sends 90 s before a
preemption or the time limit, submitit calls `checkpoint`, requeues the job and exits; the
requeued job starts the pack again and skips every run whose outcome file is already written,
so a preempted pack loses only the run it was in the middle of.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from stagewise.executors.base import RunOutcome, RunTask
from stagewise.executors.process import run_task
from stagewise.executors.slurm_support import SIGNAL_DELAY_SECONDS, read_outcome, write_outcome
from stagewise.executors.warm import WarmWorker, can_run_warm, run_warm, warm_env
from stagewise.protocol import THREADS_ENV

log = logging.getLogger("stagewise.slurm")
TIME_SLACK_SECONDS = 30.0  # USR2 this close to the limit (beyond its 90 s warning): out of time


def this_job() -> str:
    """The job's id as squeue shows it: `<array id>_<task>` inside an array."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and index:
        return f"{array}_{index}"
    return os.environ.get("SLURM_JOB_ID", "?")


def run_env() -> dict[str, str]:
    """Threads for the CPUs Slurm granted; no GPU unless Slurm granted one (it then sets
    CUDA_VISIBLE_DEVICES itself)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    threads = int(cpus) if cpus and cpus.isdigit() else cores
    env = {THREADS_ENV: str(max(1, min(threads, cores)))}
    granted = os.environ.get("SLURM_GPUS_ON_NODE") or os.environ.get("SLURM_JOB_GPUS")
    if not granted and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


class PackedRuns(Checkpointable):
    """The callable submitit runs in the job: `PackedRuns(limit_seconds)(tasks, warm)`."""

    def __init__(self, limit_seconds: float) -> None:
        self.limit_seconds = limit_seconds  # the job's --time, to tell a timeout from preemption
        self.started = time.time()
        self.current: RunTask | None = None
        self.tasks: list[RunTask] = []
        self.signalled = False
        self.terminating = False

    def __call__(self, tasks: Sequence[RunTask], warm: bool = True) -> list[RunOutcome]:
        self.started, self.tasks = time.time(), list(tasks)
        self._watch_sigterm()
        job = this_job()
        slot = f"slurm:{job}@{socket.gethostname().split('.')[0]}"
        env = run_env()
        worker: WarmWorker | None = None
        outcomes: list[RunOutcome] = []
        try:
            for task in tasks:
                done = read_outcome(task)
                if done is not None:  # a requeued job: this run ended in an earlier start
                    outcomes.append(done)
                    continue
                log.info("%s: run %s attempt %s", job, task.key, task.attempt)
                self.current = task
                if warm and can_run_warm(task):
                    if worker is None:
                        worker = WarmWorker(task.argv[0], warm_env(os.environ, env), slot)
                    outcome = run_warm(task, worker, _ignore, slot=slot)
                else:
                    outcome = run_task(task, _ignore, extra_env=env, slot=slot)
                self.current = None
                if (self.signalled or self.terminating) and outcome.status != "succeeded":
                    # Slurm is ending the job (scancel, preemption, node failure, time limit):
                    # the job's final state says why, and a requeued job reruns this run.
                    break
                write_outcome(task, outcome, job)
                outcomes.append(outcome)
        finally:
            if worker is not None:
                worker.close()
        return outcomes

    def _watch_sigterm(self) -> None:
        """Note Slurm's SIGTERM (the job is being ended), then let submitit log it as before."""
        self.terminating = False
        previous = signal.getsignal(signal.SIGTERM)

        def note(signum: int, frame: FrameType | None) -> None:
            self.terminating = True
            if callable(previous):
                previous(signum, frame)

        with contextlib.suppress(ValueError):  # not the main thread: nothing to watch
            signal.signal(signal.SIGTERM, note)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission | None:  # type: ignore[override]
        """USR2, 90 s before the end: a preemption, or the job's time limit.

        Preempted: the requeued job gets the same pack and skips the runs that wrote their
        outcome (the one in progress starts over). Out of time: a requeue would only time out
        again, so the run in progress and those not started end here as timeouts (the driver's
        retry policy decides what happens next) and the job is not requeued.
        """
        self.signalled = True
        job = this_job()
        left = self.limit_seconds - (time.time() - self.started)
        if left > SIGNAL_DELAY_SECONDS + TIME_SLACK_SECONDS:
            print(f"stagewise: {job} preempted; requeueing the pack", file=sys.stderr, flush=True)
            return DelayedSubmission(PackedRuns(self.limit_seconds), *args, **kwargs)  # type: ignore[no-untyped-call]
        minutes = self.limit_seconds / 60
        for task in self.tasks:
            if read_outcome(task) is not None:
                continue
            what = "during this run" if task is self.current else "before this run started"
            write_outcome(
                task,
                RunOutcome(
                    task.key,
                    "failed",
                    failure="timeout",
                    cause=f"timeout: Slurm job {job} reached its time limit ({minutes:g} min) "
                    f"{what}; raise the host's time_limit or lower runs_per_job",
                    log_path=task.log_path,
                    attempt=task.attempt,
                    worker=f"slurm:{job}@{socket.gethostname().split('.')[0]}",
                ),
                job,
            )
        print(f"stagewise: {job} out of time; not requeued", file=sys.stderr, flush=True)
        return None


def _ignore(_event: object) -> None:
    """Events inside the job go to the run's log; the driver follows that file."""


__all__ = ["PackedRuns", "run_env", "this_job"]
