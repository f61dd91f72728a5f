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

import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from stagewise.executors.base import RunOutcome, RunTask
from stagewise.executors.process import run_task
from stagewise.executors.slurm_support import read_outcome, write_outcome
from stagewise.executors.warm import WarmWorker, can_run_warm, run_warm, warm_env
from stagewise.protocol import THREADS_ENV

log = logging.getLogger("stagewise.slurm")


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
    """The callable submitit runs in the job: `PackedRuns()(tasks, warm)`."""

    def __call__(self, tasks: Sequence[RunTask], warm: bool = True) -> list[RunOutcome]:
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
                if warm and can_run_warm(task):
                    if worker is None:
                        worker = WarmWorker(task.argv[0], warm_env(os.environ, env), slot)
                    outcome = run_warm(task, worker, _ignore, slot=slot)
                else:
                    outcome = run_task(task, _ignore, extra_env=env, slot=slot)
                write_outcome(task, outcome, job)
                outcomes.append(outcome)
        finally:
            if worker is not None:
                worker.close()
        return outcomes

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """USR2: preempted or near the time limit. The requeued job gets the same pack and
        skips the runs that wrote their outcome (the one in progress starts over)."""
        print(f"stagewise: {this_job()} signalled; requeueing the pack", file=sys.stderr)
        return DelayedSubmission(PackedRuns(), *args, **kwargs)  # type: ignore[no-untyped-call]


def _ignore(_event: object) -> None:
    """Events inside the job go to the run's log; the driver follows that file."""


__all__ = ["PackedRuns", "run_env", "this_job"]
