"""The Slurm executor's pure parts, importable and tested without submitit or a cluster.

- the outcome file a job writes beside each run as that run ends (how results come back, one
  run at a time, even from a packed job that is killed half-way);
- the job's time limit and the sbatch settings, from a host block's `SlurmOptions`;
- whether the compute nodes can see the study folder.

Job state (squeue, scontrol) and how a job's end becomes a run's outcome live in
`slurm_state`; their names are re-exported here.
"""

from __future__ import annotations

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
from stagewise.executors.slurm_state import (
    END_STATES,
    LIVE_STATES,
    SLURM_CALL_TIMEOUT,
    JobView,
    cancel_jobs,
    end_outcome,
    expand_array_id,
    parse_scontrol,
    parse_squeue,
    scontrol_show,
    squeue,
    tail_text,
    unrecorded_jobs,
    with_job_state,
)
from stagewise.ledger.records import RunKey
from stagewise.study.slurm_options import SlurmOptions

OUTCOME_FILE = "slurm-outcome.attempt{attempt}.json"
SLURM_FOLDER = "slurm"  # <study>/slurm/<stage>/<host>/: submitit's job files and logs
DEFAULT_OVERHEAD_SECONDS = 180.0  # start-up, eval and checkpoint of a run, until one is measured
MARGIN_FRACTION = 0.25  # a job's time limit: its runs' time plus a quarter
MIN_MARGIN_SECONDS = 120.0
SIGNAL_DELAY_SECONDS = 90  # submitit's USR2@90: the warning before preemption or the time limit


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


def job_folder(root: Path, stage: str, host: str) -> Path:
    """Where the jobs of one stage on one host block are submitted from (submitit's files)."""
    return root / SLURM_FOLDER / stage / host


__all__ = [
    "END_STATES",
    "LIVE_STATES",
    "OUTCOME_FILE",
    "SIGNAL_DELAY_SECONDS",
    "SLURM_CALL_TIMEOUT",
    "SLURM_FOLDER",
    "JobView",
    "Measured",
    "cancel_jobs",
    "end_outcome",
    "expand_array_id",
    "filesystem_type",
    "job_folder",
    "job_name",
    "outcome_from_json",
    "outcome_path",
    "outcome_to_json",
    "packs",
    "parse_scontrol",
    "parse_squeue",
    "partition_nodes",
    "partition_shortage",
    "read_outcome",
    "run_seconds",
    "scontrol_show",
    "shared_folder_problem",
    "squeue",
    "submitit_parameters",
    "tail_text",
    "time_limit_minutes",
    "unrecorded_jobs",
    "with_job_state",
    "write_outcome",
]
