"""The Slurm executor's pure parts, importable and tested without submitit or a cluster.

- the outcome file a job writes beside each run as that run ends (how results come back, one
  run at a time, even from a packed job that is killed half-way);
- the job's time limit and the sbatch settings, from a host block's `SlurmOptions`;
- reading job state without accounting: `squeue` for jobs in the queue, `scontrol show job` for
  jobs that just left it (Slurm keeps them there for MinJobAge seconds);
- how a job that left the queue without a result ended, as a `RunOutcome` the driver's retry
  policy understands (TIMEOUT -> timeout, OUT_OF_MEMORY -> oom, NODE_FAIL and PREEMPTED ->
  lost, a user's scancel -> killed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stagewise.executors.base import RunOutcome, RunTask
from stagewise.ledger.records import RunKey
from stagewise.study.slurm_options import SlurmOptions

OUTCOME_FILE = "slurm-outcome.attempt{attempt}.json"
SLURM_CALL_TIMEOUT = 30.0  # squeue/scontrol/sbatch answer in well under a second when healthy
DEFAULT_OVERHEAD_SECONDS = 180.0  # start-up, eval and checkpoint of a run, until one is measured
MARGIN_FRACTION = 0.25  # a job's time limit: its runs' time plus a quarter
MIN_MARGIN_SECONDS = 120.0
SIGNAL_DELAY_SECONDS = 90  # submitit's USR2@90: the warning before preemption or the time limit
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


# ---------------------------------------------------------------------- outcome files
def outcome_path(task: RunTask) -> Path:
    """`<run folder>/slurm-outcome.attempt<N>.json`: beside the run's out folder, which each
    attempt empties, so a requeued job finds what an earlier start of the same job finished."""
    return Path(task.out_dir).parent / OUTCOME_FILE.format(attempt=task.attempt)


def outcome_to_json(outcome: RunOutcome) -> dict[str, Any]:
    data = asdict(outcome)
    data["key"] = [outcome.key.stage, outcome.key.condition_id, outcome.key.seed, outcome.key.host]
    data["summary"] = dict(outcome.summary)
    return data


def outcome_from_json(data: Mapping[str, Any]) -> RunOutcome:
    values = dict(data)
    stage, condition_id, seed, host = values.pop("key")
    values.pop("job", None)
    known = set(RunOutcome.__dataclass_fields__)
    return RunOutcome(
        key=RunKey(str(stage), str(condition_id), int(seed), str(host)),
        **{k: v for k, v in values.items() if k in known and k != "key"},
    )


def write_outcome(task: RunTask, outcome: RunOutcome, job: str) -> Path:
    """Written atomically: the driver may read it the moment it appears."""
    path = outcome_path(task)
    data = {**outcome_to_json(outcome), "job": job}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, allow_nan=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_outcome(task: RunTask) -> RunOutcome | None:
    """The outcome a job wrote for this attempt of the run, or None (not yet, or unreadable)."""
    try:
        data = json.loads(outcome_path(task).read_text(encoding="utf-8"))
        outcome = outcome_from_json(data)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return outcome if outcome.key == task.key and outcome.attempt == task.attempt else None


# ---------------------------------------------------------------------- job settings
@dataclass(frozen=True)
class Measured:
    """What the study's finished runs on a host say about its runs' real length."""

    overhead_seconds: float | None = None  # total - training time (start-up, eval, checkpoint)
    tokens_per_second: float | None = None
    steps_per_second: float | None = None


def run_seconds(task: RunTask, budget: Any, measured: Measured) -> float:
    """How long one run holds its allocation: budget (a token or step budget through the
    measured throughput) plus the measured overhead. Unmeasured token/step runs: their timeout."""
    overhead = measured.overhead_seconds or DEFAULT_OVERHEAD_SECONDS
    if task.budget_seconds > 0:
        return task.budget_seconds + overhead
    unit = getattr(budget, "unit", None)
    amount = float(getattr(budget, "amount", 0.0) or 0.0)
    if unit == "tokens" and measured.tokens_per_second:
        return amount / measured.tokens_per_second + overhead
    if unit == "steps" and measured.steps_per_second:
        return amount / measured.steps_per_second + overhead
    return task.timeout_seconds


def time_limit_minutes(seconds: Iterable[float], options: SlurmOptions) -> int:
    """The job's `--time`: the host's `time_limit`, else its runs' time plus a margin, in
    whole minutes (rounded up)."""
    if options.time_limit_minutes is not None:
        return options.time_limit_minutes
    total = sum(seconds)
    total += max(MIN_MARGIN_SECONDS, MARGIN_FRACTION * total)
    return max(1, math.ceil(total / 60))


def submitit_parameters(options: SlurmOptions, minutes: int, name: str) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters` keywords for one host block's array."""
    params: dict[str, Any] = {
        "job_name": name,
        "time": minutes,
        "signal_delay_s": SIGNAL_DELAY_SECONDS,
        "stderr_to_stdout": True,  # one log per job: what the run's status line points at
        "nodes": 1,
        "ntasks_per_node": 1,
    }
    for key in ("partition", "account", "qos", "constraint", "gpus_per_node", "cpus_per_task"):
        value = getattr(options, key)
        if value is not None:
            params[key] = value
    if options.mem_gb is not None:
        params["mem"] = options.mem_gb  # submitit writes it as GB (or MB for a fraction)
    if options.array_parallelism is not None:
        params["array_parallelism"] = options.array_parallelism
    if options.setup:
        params["setup"] = list(options.setup)
    if options.sbatch:
        params["additional_parameters"] = dict(options.sbatch)
    return params


def job_name(study: str, stage: str, host: str) -> str:
    text = f"sw-{study}-{stage}-{host}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text)[:100]


def packs(tasks: Sequence[RunTask], runs_per_job: int) -> list[list[RunTask]]:
    """Runs in order, `runs_per_job` to a job."""
    size = max(1, runs_per_job)
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


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
    try:
        proc = subprocess.run(
            ["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r|%N"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=slurm_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # squeue refuses ids it no longer knows ("Invalid job id specified") when every job
        # asked for has left the queue: that is an empty queue, not a failure.
        return {} if "Invalid job id" in proc.stderr else None
    return parse_squeue(proc.stdout)


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
    try:
        proc = subprocess.run(
            ["scontrol", "-o", "show", "job", job_id],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=slurm_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0 or not proc.stdout.strip():
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
    state = view.state if view is not None else "UNKNOWN"
    where = f"Slurm job {job_id} {state}"
    if view is not None and view.reason:
        where += f" ({view.reason})"
    if view is not None and view.node:
        where += f" on {view.node}"
    log_note = f"; job log {job_log}" if job_log else ""
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
    state = view.state if view is not None else "UNKNOWN"
    where = f"Slurm job {job_id} {state}"
    if view is not None and view.reason:
        where += f" ({view.reason})"
    if view is not None and view.node:
        where += f" on {view.node}"
    log_note = f"; job log {job_log}" if job_log else ""
    if state in END_STATES and state not in ("COMPLETED", "FAILED"):
        kind, meaning = END_STATES[state]
        cause = f"{kind}: {meaning}; {where}{log_note} (the run: {outcome.cause})"
        return dataclasses.replace(outcome, failure=kind, cause=cause)
    return dataclasses.replace(outcome, cause=f"{outcome.cause}; {where}{log_note}")


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


# ---------------------------------------------------------------------- the shared folder
NEVER_SHARED = frozenset({"tmpfs", "ramfs", "devtmpfs"})


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding `path`, from /proc/mounts (longest mount point)."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best: tuple[int, str] | None = None
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > best[0]):
            best = (len(point), parts[2])
    return best[1] if best else None


def partition_nodes(partition: str | None, timeout: float = SLURM_CALL_TIMEOUT) -> list[str]:
    argv = ["sinfo", "-h", "-N", "-o", "%N"] + (["-p", partition] if partition else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def partition_shortage(
    partition: str | None,
    cpus: int | None,
    mem_gb: float | None,
    timeout: float = SLURM_CALL_TIMEOUT,
) -> str | None:
    """Which resource no node of the partition has enough of for one job (from `sinfo`), in
    words naming the host setting to lower; None when none is short or sinfo cannot tell."""
    argv = ["sinfo", "-h", "-N", "-o", "%c|%m"] + (["-p", partition] if partition else [])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    nodes = []
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            nodes.append((int(parts[0]), int(parts[1])))
    if not nodes:
        return None
    where = f"partition {partition}" if partition else "the default partition"
    short = []
    most_cpus = max(c for c, _ in nodes)
    if cpus is not None and cpus > most_cpus:
        short.append(f"CPU (its nodes have at most {most_cpus}; cpus_per_task = {cpus})")
    most_mb = max(m for _, m in nodes)
    if mem_gb is not None and mem_gb * 1024 > most_mb:
        short.append(f"memory (its nodes have at most {most_mb} MB; mem_gb = {mem_gb:g})")
    return f"short on {where}: {'; '.join(short)}" if short else None


def shared_folder_problem(folder: Path, nodes: Sequence[str]) -> str | None:
    """Why the compute nodes cannot see `folder`, when that is certain before submitting:
    it lives in memory on this machine (tmpfs) and the nodes are other machines."""
    here = {socket.gethostname(), socket.gethostname().split(".")[0]}
    others = [n for n in nodes if n not in here]
    fs = filesystem_type(folder)
    if others and fs in NEVER_SHARED:
        return (
            f"the study folder {folder} is on {fs}, in this machine's memory, but the jobs run "
            f"on {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}: put the study on "
            "a filesystem the compute nodes share (same path on every node)"
        )
    return None


__all__ = [
    "END_STATES",
    "LIVE_STATES",
    "OUTCOME_FILE",
    "JobView",
    "Measured",
    "end_outcome",
    "expand_array_id",
    "filesystem_type",
    "job_name",
    "outcome_from_json",
    "outcome_path",
    "outcome_to_json",
    "packs",
    "parse_scontrol",
    "parse_squeue",
    "partition_shortage",
    "read_outcome",
    "run_seconds",
    "scontrol_show",
    "shared_folder_problem",
    "squeue",
    "submitit_parameters",
    "tail_text",
    "time_limit_minutes",
    "with_job_state",
    "write_outcome",
]
