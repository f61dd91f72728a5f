"""The executor contract shared by the local and Ray executors.

`stagewise run` (executors/stage.py) turns every claimable run of a stage into a `RunTask`,
hands it to the executor of the run's host (`executor = "local"`, `"ray"` or `"slurm"`), and reads back
events with `poll()`: `RunStarted` when a run got a slot, `RunProgress` for each progress line
of the runner, and one `RunOutcome` when it ended. Outcomes are written to the ledger by the
driver only, so an executor never speaks SQL and a late report from a lost worker cannot
overwrite a rerun (the ledger closes a run only for its owner).

An implementation is one class, registered by name in `EXECUTORS` and imported lazily, so the
core never imports Ray:

    class MyExecutor(Executor):
        def __init__(self, study, hosts, *, workers=None): ...
        def capacity(self, host): ...        # runs of this host that may run at once
        def submit(self, task): ...          # start (or queue) one run; never blocks for long
        def poll(self, timeout): ...         # events since the last call, waiting <= timeout
        def cancel_all(self, reason): ...    # stop everything; outcomes come back via poll()

Every run is a process started from `task.argv` (a list, never a shell string) with
`task.env` added to the environment; `stagewise.executors.process.run_task` does that, writes
the full log, streams progress and classifies the end, and is what both executors call (the
Ray executor inside its remote task).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stagewise.errors import ExecutorError
from stagewise.ledger.records import RunKey
from stagewise.study.model import Host, Study

OutcomeStatus = Literal["succeeded", "failed", "interrupted"]

# Why a run failed, as a short word the driver uses to decide on retries.
FailureKind = Literal[
    "diverged",  # NaN / exploding loss: deterministic, never retried
    "oom",  # out of memory: retried with half the device batch where the runner allows it
    "timeout",  # ran past budget + grace: killed; retried (a hang is usually transient)
    "crash",  # non-zero exit without a clearer cause: retried
    "killed",  # ended by a signal we did not send (OOM killer, node loss): retried
    "bad_input",  # exit 2, the runner refused its arguments: never retried
    "no_result",  # exit 0 but neither summary.json nor a `---` block: never retried
    "lost",  # the worker/node running it went away (Ray): retried
]
TRANSIENT: frozenset[str] = frozenset({"oom", "timeout", "crash", "killed", "lost"})
# Ends whose cause lies outside the run (a signal it did not raise, a lost node or worker): on
# every executor the driver reruns these up to the host's `max_retries` times (default 3) before
# they count as failed, besides what `--retries` allows (executors/dispatch.py).
FAULTS: frozenset[str] = frozenset({"killed", "lost"})
DEFAULT_FAULT_RETRIES = 3


@dataclass(frozen=True)
class RunTask:
    """One attempt of one run, fully resolved: what to start, where it writes, how long it gets.

    `argv` is the complete command (argv[0] is the program); `env` holds only the overrides to
    add to the executor's environment (the executor adds device pinning such as
    CUDA_VISIBLE_DEVICES and STAGEWISE_TORCH_THREADS itself). `out_dir` receives summary.json and
    the checkpoint and is emptied before the attempt starts (reruns start from scratch);
    `log_path` receives the full stdout+stderr. Paths are absolute strings so a task can be
    pickled to another machine that shares the study folder.
    """

    key: RunKey
    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str
    out_dir: str
    log_path: str
    budget_seconds: float
    timeout_seconds: float  # budget + grace; the run is killed after this many seconds
    attempt: int = 1
    owner: str = ""  # the driver that claimed the run in the ledger
    device_batch_size: int | None = None  # what this attempt uses, when known (OOM retries)
    options: Mapping[str, Any] = field(default_factory=dict)  # free extras for an executor

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(a, str) for a in self.argv):
            raise ExecutorError(f"{self.key}: argv must be a non-empty list of strings")
        if self.timeout_seconds <= 0:
            raise ExecutorError(
                f"{self.key}: timeout must be positive, but got timeout={self.timeout_seconds}"
            )


@dataclass(frozen=True)
class RunStarted:
    """A run got a slot and its process was started."""

    key: RunKey
    attempt: int
    slot: str  # e.g. "block-a/cuda:1", "block-a/cpu#0", a Ray node id
    pid: int | None = None
    # The executor started this same attempt again by itself after a fault (Ray after a lost
    # node, Slurm after a requeue): the driver shows the retry; the ledger keeps one attempt.
    rerun: bool = False


@dataclass(frozen=True)
class RunProgress:
    """One `progress:` line of the runner (nan/None where the runner did not say)."""

    key: RunKey
    step: int
    progress: float
    loss: float | None
    tok_per_s: float | None
    mfu: float | None
    remaining_s: float | None


@dataclass(frozen=True)
class RunOutcome:
    """How one attempt ended; the driver records it in the ledger and may retry it."""

    key: RunKey
    status: OutcomeStatus
    cause: str | None = None  # human-readable, e.g. "diverged: loss is NaN at step 31"
    failure: str | None = None  # a FailureKind for failed runs
    summary: Mapping[str, Any] = field(default_factory=dict)
    log_tail: str = ""
    log_path: str | None = None
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    returncode: int | None = None
    elapsed_seconds: float = 0.0
    startup_seconds: float | None = None  # process start -> first progress line
    worker: str | None = None  # slot or node that ran it
    attempt: int = 1
    # Reruns the executor itself made of this attempt after faults (Ray after a lost node); the
    # driver's fault policy (`max_retries`) counts them, so no executor reruns more than it.
    fault_reruns: int = 0

    def __post_init__(self) -> None:
        if self.status not in ("succeeded", "failed", "interrupted"):
            raise ExecutorError(f"{self.key}: unknown outcome status {self.status!r}")

    @property
    def transient(self) -> bool:
        """Whether another attempt could plausibly succeed."""
        return self.status == "failed" and self.failure in TRANSIENT

    @property
    def val_bpb(self) -> float | None:
        value = self.summary.get("val_bpb")
        return float(value) if isinstance(value, int | float) else None


@dataclass(frozen=True)
class ExecutorNotice:
    """A condition of the executor's backend that the user should see while it lasts.

    E.g. "block-a: no live Ray node offers blk-a=1 (since 12s)" or "the Ray head at ... does not
    answer". `topic` names the condition (one notice per topic is current: a new one replaces
    it); `text=None` says it is over. The driver shows it in the live view and records it in
    the ledger (`executor.notice`), so `stagewise status` shows it too.
    """

    topic: str
    text: str | None
    host: str | None = None


@dataclass(frozen=True)
class RunSubmitted:
    """A cluster scheduler accepted the job that carries this attempt (Slurm).

    The driver writes the job id to the ledger as soon as it reads this event, before it waits
    for anything, so a driver started after a crash re-attaches to the job (`Executor.reattach`)
    instead of submitting the run again.
    """

    key: RunKey
    attempt: int
    executor: str
    job_id: str
    folder: str | None = None  # where the scheduler's job files are (submitit's folder)
    log_path: str | None = None  # the job's own log (the run's log stays `task.log_path`)


@dataclass(frozen=True)
class RunJobState:
    """The scheduler's word on a run's job changed: PENDING (and why), RUNNING on a node,
    REQUEUED after a preemption; `note` is set when a person should hear it (a long wait)."""

    key: RunKey
    attempt: int
    job_id: str
    state: str
    reason: str | None = None
    node: str | None = None
    note: str | None = None


ExecutorEvent = RunStarted | RunProgress | RunOutcome | RunSubmitted | RunJobState | ExecutorNotice


class Executor(ABC):
    """Runs tasks of one or more hosts of one executor kind; see the module docstring."""

    kind: str = ""

    def __init__(self, study: Study, hosts: Sequence[Host], *, workers: int | None = None):
        self.study = study
        self.hosts = {h.name: h for h in hosts}
        self.workers = workers

    @abstractmethod
    def capacity(self, host: str) -> int:
        """How many runs of `host` may run at once (slots); 0 means none can run now."""

    @abstractmethod
    def active(self, host: str | None = None) -> int:
        """Runs submitted and not yet reported as ended (of one host, or of all)."""

    @abstractmethod
    def submit(self, task: RunTask) -> None:
        """Start one run (or queue it with the backend); returns without waiting for it."""

    @abstractmethod
    def poll(self, timeout: float = 0.2) -> list[ExecutorEvent]:
        """Events since the last call; waits up to `timeout` seconds when there are none."""

    @abstractmethod
    def cancel_all(self, reason: str = "interrupted") -> None:
        """Stop every running run; each still reports a RunOutcome (`interrupted`) via poll()."""

    def free_slots(self, host: str) -> int:
        return max(0, self.capacity(host) - self.active(host))

    def shortage(self, host: str) -> str:
        """Why `host` has no slot now, in words (shown while its runs wait for one)."""
        return f"{host}: no slot to run on"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backend resources (threads, a Ray connection)."""

    def reattach(self, task: RunTask, job_id: str) -> None:
        """Follow a job a lost driver submitted for `task` (same attempt) until it reports.

        Only executors whose runs outlive their driver (a cluster scheduler's jobs) can; the
        driver calls this for runs whose job id the ledger holds (`RunSubmitted`).
        """
        raise ExecutorError(f"the {self.kind} executor cannot re-attach to job {job_id}")


# name -> "module:Class"; imported only when a stage has a host of that kind.
EXECUTORS: dict[str, str] = {
    "local": "stagewise.executors.local:LocalExecutor",
    "ray": "stagewise.executors.ray:RayExecutor",
    "slurm": "stagewise.executors.slurm:SlurmExecutor",
}
# The extra that brings an executor's library, for the one-line install hint.
EXTRAS = {"ray": "ray", "slurm": "slurm"}


def fault_retries(host: Host) -> int:
    """How many times a run of `host` ended by a cause outside it is rerun (`max_retries`)."""
    value = host.options.get("max_retries", DEFAULT_FAULT_RETRIES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ExecutorError(
            f"hosts.{host.name}.max_retries: expected a non-negative integer, but got {value!r}"
        )
    return value


def host_seconds(host: Host, key: str, default: float | None) -> float | None:
    """A positive number of seconds from the host's options (`key`), or `default`."""
    value = host.options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ExecutorError(
            f"hosts.{host.name}.{key}: expected a positive number of seconds, but got {value!r}"
        )
    return float(value)


def executor_class(kind: str) -> type[Executor]:
    """The executor class registered for `kind`, imported now."""
    target = EXECUTORS.get(kind)
    if target is None:
        raise ExecutorError(f"no executor named {kind!r}; known: {', '.join(sorted(EXECUTORS))}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = EXTRAS.get(kind)
        hint = f' (install it with `pip install "stagewise[{extra}]"`)' if extra else ""
        raise ExecutorError(f"the {kind} executor is not available: {exc}{hint}") from None
    cls = getattr(module, cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise ExecutorError(f"{target} is not an Executor class")
    return cls


__all__ = [
    "DEFAULT_FAULT_RETRIES",
    "EXECUTORS",
    "FAULTS",
    "TRANSIENT",
    "Executor",
    "ExecutorEvent",
    "ExecutorNotice",
    "FailureKind",
    "OutcomeStatus",
    "RunJobState",
    "RunOutcome",
    "RunProgress",
    "RunStarted",
    "RunSubmitted",
    "RunTask",
    "executor_class",
    "fault_retries",
    "host_seconds",
]
