"""Slurm job state without accounting, and how a job's end becomes a run's outcome.

Many clusters (and our test cluster) run without `sacct`, where submitit cannot tell a job's
state. These read it from `squeue` for jobs in the queue and from `scontrol show job` for a job
that has just left it (Slurm keeps it there for MinJobAge seconds), each call bounded by a
timeout; `end_outcome` and `with_job_state` turn a job's final state into the failure kind the
driver's retry policy reads (TIMEOUT -> timeout, OUT_OF_MEMORY -> oom, NODE_FAIL and PREEMPTED
-> lost, a user's scancel -> killed); `unrecorded_jobs` and `cancel_jobs` find and end the jobs
a killed driver submitted but never recorded. Pure apart from the calls to Slurm.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.executors.base import RunOutcome, RunTask

SLURM_CALL_TIMEOUT = 30.0  # squeue/scontrol/sbatch answer in well under a second when healthy
# Slurm job states (squeue %T / scontrol JobState) that are still alive.
LIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_FED",
        "REQUEUE_HOLD",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "SUSPENDED",
        "STOPPED",
        "RESV_DEL_HOLD",
        "PREEMPTED",  # stays in the queue when Slurm requeues it
    }
)
# A final state -> (failure kind, what it means to a person).
END_STATES: dict[str, tuple[str, str]] = {
    "TIMEOUT": ("timeout", "the job reached its Slurm time limit"),
    "DEADLINE": ("timeout", "the job reached its deadline"),
    "OUT_OF_MEMORY": ("oom", "the job ran out of memory (Slurm's OUT_OF_MEMORY)"),
    "NODE_FAIL": ("lost", "the node running the job failed"),
    "BOOT_FAIL": ("lost", "the node could not boot for the job"),
    "PREEMPTED": ("lost", "the job was preempted and not requeued"),
    "CANCELLED": ("killed", "the job was cancelled (scancel)"),
    "FAILED": ("crash", "the job failed"),
    "COMPLETED": ("no_result", "the job completed without reporting this run"),
    "REVOKED": ("lost", "the job was revoked"),
    "SPECIAL_EXIT": ("crash", "the job ended with a special exit"),
}


# ---------------------------------------------------------------------- job state
@dataclass(frozen=True)
class JobView:
    """One job as Slurm shows it now."""

    job_id: str
    state: str
    reason: str | None = None
    node: str | None = None
    exit_code: str | None = None
    restarts: int = 0

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def slurm_env() -> dict[str, str]:
    return dict(os.environ)


def _slurm_call(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    """Run one Slurm command, its output captured as text; None when it could not run or timed out."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=slurm_env()
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def squeue(
    job_ids: Iterable[str], timeout: float = SLURM_CALL_TIMEOUT
) -> dict[str, JobView] | None:
    """The jobs among `job_ids` still in the queue, by id; None when squeue itself failed.

    Array ids are asked for by their array (`123`), which lists every task (`123_4`); one call
    covers all the driver's jobs, whatever their number.
    """
    ids = sorted({j.split("_")[0] for j in job_ids})
    if not ids:
        return {}
    proc = _slurm_call(["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r|%N"], timeout)
    if proc is None:
        return None
    if proc.returncode != 0:
        # squeue refuses ids it no longer knows ("Invalid job id specified") when every job
        # asked for has left the queue: that is an empty queue, not a failure.
        return {} if "Invalid job id" in proc.stderr else None
    return parse_squeue(proc.stdout)


def unrecorded_jobs(
    folder: Path, recorded: Iterable[str], timeout: float = SLURM_CALL_TIMEOUT
) -> list[str] | None:
    """This user's queued jobs submitted from `folder` whose ids the ledger does not hold.

    A driver killed after sbatch accepted an array but before the job ids reached the ledger
    leaves jobs that no ledger row leads to (orphans): their runs are put back and would run a
    second time beside them. They are found by where they were submitted from: submitit hands
    sbatch a script inside the stage's job folder (`<study>/slurm/<stage>/<host>/`), and squeue
    keeps that path as the job's command (`%o`), so jobs of another study or stage never match.
    Array tasks are listed one by one (`-r`). None when squeue could not be asked.
    """
    proc = _slurm_call(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%o"], timeout)
    if proc is None or proc.returncode != 0:
        return None
    # The path as submitit gave it, and resolved (a study reached through a link).
    inside = tuple({str(folder) + os.sep, str(folder.resolve()) + os.sep})
    known = set(recorded)
    out = []
    for line in proc.stdout.splitlines():
        job_id, _, command = line.strip().partition("|")
        if job_id and command.startswith(inside) and job_id not in known:
            out.append(job_id)
    return sorted(out)


def cancel_jobs(job_ids: Sequence[str], wait_seconds: float = 30.0) -> list[str]:
    """scancel `job_ids` and wait (bounded) until they have left the queue; the ids still
    queued when the wait ends (an answer from squeue that never came counts as queued)."""
    if not job_ids:
        return []
    _slurm_call(["scancel", *job_ids], SLURM_CALL_TIMEOUT)
    deadline = time.monotonic() + wait_seconds
    while True:
        views = squeue(job_ids)
        left = sorted(job_ids) if views is None else sorted(j for j in job_ids if j in views)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


def parse_squeue(text: str) -> dict[str, JobView]:
    out: dict[str, JobView] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4 or not parts[0]:
            continue
        job_id, state, reason, node = parts[:4]
        # A pending array prints as `123_[4-7%2]`: one entry per task it stands for.
        for jid in expand_array_id(job_id):
            out[jid] = JobView(
                jid,
                state.strip().upper(),
                None if reason.strip() in ("", "None", "(null)") else reason.strip(),
                node.strip() or None,
            )
    return out


def expand_array_id(job_id: str) -> list[str]:
    match = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", job_id)
    if match is None:
        return [job_id]
    base, ranges = match.groups()
    ids = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        for index in range(int(low), int(high or low) + 1):
            ids.append(f"{base}_{index}")
    return ids


def scontrol_show(job_id: str, timeout: float = SLURM_CALL_TIMEOUT) -> JobView | None:
    """A job that left the queue, as `scontrol show job` still knows it; None when not."""
    proc = _slurm_call(["scontrol", "-o", "show", "job", job_id], timeout)
    if proc is None or proc.returncode != 0 or not proc.stdout.strip():
        return None
    return parse_scontrol(job_id, proc.stdout)


def parse_scontrol(job_id: str, text: str) -> JobView | None:
    """The record of `job_id` in `scontrol -o show job` output (one line per job)."""
    for line in text.splitlines():
        fields = dict(
            token.split("=", 1)
            for token in line.split()
            if "=" in token and not token.startswith("=")
        )
        array = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        this = f"{array[0]}_{array[1]}" if array[0] and array[1] else fields.get("JobId")
        if this != job_id and fields.get("JobId") != job_id:
            continue
        reason = fields.get("Reason")
        node = fields.get("NodeList") or fields.get("BatchHost")
        try:
            restarts = int(fields.get("Restarts", "0"))
        except ValueError:
            restarts = 0
        return JobView(
            job_id,
            fields.get("JobState", "UNKNOWN").upper(),
            None if reason in (None, "None", "(null)") else reason,
            None if node in (None, "(null)", "") else node,
            fields.get("ExitCode"),
            restarts,
        )
    return None


# ---------------------------------------------------------------------- how a job ended
def end_outcome(
    task: RunTask,
    job_id: str,
    view: JobView | None,
    *,
    job_log: str | None,
    log_tail: str,
    job_error: str | None = None,
    cancelled: str | None = None,
) -> RunOutcome:
    """The outcome of a run whose job left the queue without reporting it.

    `view` is the job's last state (None: Slurm forgot it, e.g. after MinJobAge); `job_error`
    the traceback submitit saved when the job's Python failed; `cancelled` our own reason when
    the driver cancelled it (Ctrl-C), which makes the run interrupted, not failed.
    """
    state, where, log_note = _job_where(job_id, view, job_log)
    common: dict[str, Any] = dict(
        key=task.key,
        log_path=task.log_path,
        log_tail=log_tail,
        attempt=task.attempt,
        worker=f"slurm:{job_id}" + (f"@{view.node}" if view is not None and view.node else ""),
    )
    if cancelled is not None:
        return RunOutcome(status="interrupted", cause=f"{cancelled} ({where})", **common)
    kind, meaning = END_STATES.get(state, ("lost", "the job left the queue without a result"))
    text = (job_error or "").lower()
    if job_error and "timed-out" in text:
        kind, meaning = "timeout", "the job reached its time limit (submitit: timed out)"
    elif job_error and kind in ("crash", "no_result"):
        meaning = f"the job's Python failed: {_last_line(job_error)}"
    if state == "FAILED" and job_log and not Path(job_log).exists():
        # Slurm could not even open the job's log: the study folder is not on the node.
        kind = "bad_input"
        meaning = (
            f"the job left no log at {job_log}: the study folder must be on a filesystem "
            "shared with the compute nodes (the same path on every node)"
        )
    return RunOutcome(
        status="failed", failure=kind, cause=f"{kind}: {meaning}; {where}{log_note}", **common
    )


def with_job_state(
    outcome: RunOutcome, job_id: str, view: JobView | None, job_log: str | None
) -> RunOutcome:
    """A run the job reported as killed by a signal, told by what Slurm did to its job.

    scancel, a preemption, the time limit, the OOM killer and a failing node all reach the run
    as a signal; the job's final state says which, and decides the failure kind (and so the
    retry): TIMEOUT -> timeout, OUT_OF_MEMORY -> oom, NODE_FAIL/PREEMPTED -> lost, CANCELLED ->
    killed. The run's own words stay at the end of the cause.
    """
    state, where, log_note = _job_where(job_id, view, job_log)
    if state in END_STATES and state not in ("COMPLETED", "FAILED"):
        kind, meaning = END_STATES[state]
        cause = f"{kind}: {meaning}; {where}{log_note} (the run: {outcome.cause})"
        return dataclasses.replace(outcome, failure=kind, cause=cause)
    return dataclasses.replace(outcome, cause=f"{outcome.cause}; {where}{log_note}")


def _job_where(job_id: str, view: JobView | None, job_log: str | None) -> tuple[str, str, str]:
    """The job's last state, `Slurm job 123 STATE (reason) on node` and `; job log PATH` ("")."""
    state = view.state if view is not None else "UNKNOWN"
    where = f"Slurm job {job_id} {state}"
    if view is not None and view.reason:
        where += f" ({view.reason})"
    if view is not None and view.node:
        where += f" on {view.node}"
    log_note = f"; job log {job_log}" if job_log else ""
    return state, where, log_note


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def tail_text(path: str | Path | None, chars: int = 4000) -> str:
    if not path:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


__all__ = [
    "END_STATES",
    "LIVE_STATES",
    "SLURM_CALL_TIMEOUT",
    "JobView",
    "cancel_jobs",
    "end_outcome",
    "expand_array_id",
    "parse_scontrol",
    "parse_squeue",
    "scontrol_show",
    "squeue",
    "tail_text",
    "unrecorded_jobs",
    "with_job_state",
]
