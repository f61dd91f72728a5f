"""The Slurm executor: the runs of a `executor = "slurm"` host block go to a cluster as job arrays.

One host block is one kind of machine (a partition, often narrowed by a node feature with
`constraint`). The driver hands every run of a stage to `submit`; at its next `poll` the
executor submits them through submitit as **one job array per stage per host block**, throttled
by `array_parallelism`, with `runs_per_job` runs packed into each array task (one after another
on its allocation: minute-long screens then pay the queue once per pack, not once per run).
Inside the job, `slurm_job.PackedRuns` runs them exactly as the local executor would and writes
each run's outcome file the moment it ends; the driver reads those files, so results come back
as the same `RunOutcome`s as from the other executors, one run at a time.

Exactly once across driver restarts: every job id goes to the ledger (`RunSubmitted`) as soon
as sbatch accepts it. A driver started after a SIGKILL finds those runs `running` under a dead
owner with an open job, takes them over (`recovery.reattach_stale`) and follows the same jobs
with `submitit.SlurmJob(folder, job_id)` (`reattach`), never unpickling any driver state; a
finished job's runs are collected from their outcome files.

Without accounting (no `sacct`, as on many clusters and our test cluster) submitit cannot tell
a job's state and would wait forever for a job killed before it wrote its result. So this
executor never asks submitit for state: it reads `squeue` for jobs in the queue and `scontrol
show job` for a job that has just left it, and a job that left the queue without reporting a
run ends that run (after `GONE_GRACE_SECONDS` for slow shared filesystems) with Slurm's state
and reason (`slurm_support.end_outcome`). Every call to Slurm has a timeout; a Slurm that stops
answering (squeue failing) is said at once in the live view and `stagewise status`, and after
the host's `scheduler_timeout_seconds` (default `SLURM_SILENT_SECONDS`) ends the stage with
exit 75 (`ClusterLost`), leaving the runs with their jobs: the next `stagewise run`
re-attaches to them once slurmctld is back, so nothing runs twice.

submitit is imported only here (and only when a stage has a Slurm host):
`pip install "stagewise[slurm]"`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.errors import ClusterLost, ExecutorError
from stagewise.executors.base import (
    Executor,
    ExecutorEvent,
    ExecutorNotice,
    RunJobState,
    RunOutcome,
    RunSubmitted,
    RunTask,
    host_seconds,
)
from stagewise.executors.process import classify
from stagewise.executors.ray_support import LogTail, RayRun, follow_log
from stagewise.executors.slurm_checks import check_slurm, measured, test_submission
from stagewise.executors.slurm_support import (
    SLURM_CALL_TIMEOUT,
    SLURM_FOLDER,
    JobView,
    end_outcome,
    job_folder,
    job_name,
    packs,
    partition_nodes,
    read_outcome,
    run_seconds,
    scontrol_show,
    shared_folder_problem,
    squeue,
    submitit_parameters,
    tail_text,
    time_limit_minutes,
    with_job_state,
)
from stagewise.ledger import RunKey
from stagewise.protocol import finished_summary
from stagewise.study.model import Host, Study
from stagewise.study.slurm_options import SlurmOptions

try:
    submitit: Any = importlib.import_module("submitit")
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ExecutorError(
        'the slurm executor needs submitit; install it with `pip install "stagewise[slurm]"`'
    ) from None

from stagewise.executors.slurm_job import PackedRuns

MAX_ARRAY_TASKS = 1000  # Slurm's default MaxArraySize is 1001 (indices 0..1000)
STATE_REFRESH_SECONDS = 2.0  # how often squeue is asked (one call for all the driver's jobs)
FILE_SCAN_SECONDS = 0.5  # how often the runs' logs and outcome files are looked at
GONE_GRACE_SECONDS = 10.0  # a job out of the queue: how long its outcome files may lag (NFS)
SLURM_SILENT_SECONDS = 600.0  # default wait for a controller (squeue) that stopped answering
MAX_REQUEUES = 10  # preemptions one job may survive (submitit requeues it each time)
SETTLE_SECONDS = 30.0  # a run killed by a signal: how long to wait for its job's final state


@dataclass
class SlurmRun(RayRun):
    """One run the driver follows: its task, its job, what Slurm last said about the job."""

    job_id: str = ""
    job_log: str | None = None
    state: str = "SUBMITTED"
    reason: str | None = None
    node: str | None = None
    gone_since: float | None = None
    pending_since: float = field(default_factory=time.monotonic)
    waited_note: bool = False
    killed: RunOutcome | None = None  # reported killed by a signal: waiting for Slurm's why
    killed_at: float = 0.0


class SlurmExecutor(Executor):
    kind = "slurm"

    def __init__(
        self,
        study: Study,
        hosts: Sequence[Host],
        *,
        workers: int | None = None,
        check: bool = True,
    ) -> None:
        super().__init__(study, hosts, workers=workers)
        if workers is not None and workers < 1:
            raise ExecutorError(f"--workers must be at least 1, but got --workers {workers}")
        check_slurm()
        self.options = {h.name: h.slurm or SlurmOptions() for h in hosts}
        self.folder = study.root / SLURM_FOLDER
        for h in hosts:
            options = self.options[h.name]
            problem = shared_folder_problem(study.root, partition_nodes(options.partition))
            if problem is not None:
                raise ExecutorError(f"hosts.{h.name}: {problem}")
            if check:
                test_submission(h, options)
        self.measured = {h.name: measured(study, h.name) for h in hosts}
        self.warm = study.runner.get("warm_workers", True) is not False
        self._buffer: dict[str, list[RunTask]] = {}
        self._runs: dict[RunKey, SlurmRun] = {}
        self._cancelled: str | None = None
        self._next_refresh = 0.0
        self._next_scan = 0.0
        self._silent_since: float | None = None
        self._lost = False
        self.scheduler_timeout = min(
            [SLURM_SILENT_SECONDS]
            + [
                t
                for h in hosts
                if (t := host_seconds(h, "scheduler_timeout_seconds", None)) is not None
            ]
        )

    # ------------------------------------------------------------------ contract
    def capacity(self, host: str) -> int:
        """Slurm queues every run; the array's `%N` throttles how many run at once."""
        total = MAX_ARRAY_TASKS * self.options[host].runs_per_job
        return total if self.workers is None else min(total, self.workers)

    def active(self, host: str | None = None) -> int:
        buffered = sum(len(t) for h, t in self._buffer.items() if host is None or h == host)
        return buffered + sum(1 for k in self._runs if host is None or k.host == host)

    def submit(self, task: RunTask) -> None:
        """Kept until the next `poll`, which submits all of a host's runs as one array."""
        if task.key.host not in self.options:
            raise ExecutorError(f"{task.key}: host {task.key.host} is not a Slurm host here")
        self._buffer.setdefault(task.key.host, []).append(task)

    def reattach(self, task: RunTask, job_id: str) -> None:
        job = submitit.SlurmJob(folder=self._job_folder(task), job_id=job_id)
        run = SlurmRun(task, job_id, LogTail(Path(task.log_path)), job_id=job_id)
        run.job_log = str(job.paths.stdout)
        run.state = "UNKNOWN"
        self._runs[task.key] = run
        self._next_refresh = 0.0

    def poll(self, timeout: float = 0.2) -> list[ExecutorEvent]:
        events = self._flush()
        now = time.monotonic()
        # Logs and outcome files live on a shared filesystem: look a few times a second, and
        # never for a job still waiting in the queue (it has written nothing new).
        scan = now >= self._next_scan
        if scan:
            self._next_scan = now + FILE_SCAN_SECONDS
        for run in list(self._runs.values()):
            if not scan or (run.state == "PENDING" and run.gone_since is None):
                continue
            events += follow_log(run)
            outcome = run.killed or read_outcome(run.task)
            if outcome is None:
                continue
            if outcome.failure == "killed" and self._cancelled is not None:
                # Our own scancel (Ctrl-C, close): the run was interrupted, not failed.
                outcome = dataclasses.replace(
                    outcome, status="interrupted", failure=None, cause=self._cancelled
                )
            elif outcome.failure == "killed":
                # A signal from outside: Slurm ended the job (scancel, preemption, time limit,
                # OOM, node failure). Its final state says which; wait for it, boundedly.
                if run.killed is None:
                    run.killed, run.killed_at = outcome, time.monotonic()
                    self._next_refresh = 0.0
                continue
            events += self._end(run, outcome)
        if time.monotonic() >= self._next_refresh and self._runs:
            events += self._refresh()
            self._next_refresh = time.monotonic() + STATE_REFRESH_SECONDS
        if not events and timeout > 0:
            time.sleep(timeout)
        return events

    def cancel_all(self, reason: str = "interrupted") -> None:
        self._cancelled = reason
        ids = sorted({run.job_id for run in self._runs.values()})
        if ids:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(["scancel", *ids], capture_output=True, timeout=SLURM_CALL_TIMEOUT)
        self._next_refresh = 0.0

    def close(self) -> None:
        if self._lost:
            return  # the controller is gone: the jobs are left to the next driver to re-attach
        if self._buffer or self._runs:
            self.cancel_all("executor closed")
            deadline = time.monotonic() + GONE_GRACE_SECONDS + 2 * STATE_REFRESH_SECONDS
            while self._runs and time.monotonic() < deadline:
                self.poll(0.2)

    # ------------------------------------------------------------------ submitting
    def _job_folder(self, task: RunTask) -> Path:
        return job_folder(self.study.root, task.key.stage, task.key.host)

    def _flush(self) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = []
        buffered, self._buffer = self._buffer, {}
        for host, tasks in buffered.items():
            if self._cancelled is not None:
                events += [
                    RunOutcome(t.key, "interrupted", cause=self._cancelled, attempt=t.attempt)
                    for t in tasks
                ]
                continue
            events += self._submit_array(host, tasks)
        return events

    def _submit_array(self, host: str, tasks: list[RunTask]) -> list[ExecutorEvent]:
        options = self.options[host]
        groups = packs(tasks, options.runs_per_job)
        stage = self.study.stages[tasks[0].key.stage]
        minutes = time_limit_minutes(
            [
                max(
                    sum(run_seconds(t, stage.budget, self.measured[host]) for t in g)
                    for g in groups
                )
            ],
            options,
        )
        folder = self._job_folder(tasks[0])
        folder.mkdir(parents=True, exist_ok=True)
        # submitit counts any USR2 in a job shorter than 10 minutes as a timeout; PackedRuns
        # tells them apart itself, so this only bounds how often one job is requeued.
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        name = job_name(self.study.name, stage.stage_id, host)
        executor.update_parameters(**submitit_parameters(options, minutes, name))
        try:
            with executor.batch():
                pack = PackedRuns(minutes * 60)
                jobs = [executor.submit(pack, group, self.warm) for group in groups]
        except Exception as exc:  # sbatch's refusal, in Slurm's words
            text = " ".join(str(exc).split())
            raise ExecutorError(f"hosts.{host}: sbatch refused the stage's jobs: {text}") from None
        events: list[ExecutorEvent] = []
        for job, group in zip(jobs, groups, strict=True):
            for task in group:
                run = SlurmRun(task, job.job_id, LogTail(Path(task.log_path)), job_id=job.job_id)
                run.job_log = str(job.paths.stdout)
                self._runs[task.key] = run
                events.append(
                    RunSubmitted(
                        task.key,
                        task.attempt,
                        self.kind,
                        job.job_id,
                        folder=str(folder),
                        log_path=run.job_log,
                    )
                )
        self._next_refresh = time.monotonic() + 0.5
        return events

    # ------------------------------------------------------------------ following jobs
    def _refresh(self) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = []
        now = time.monotonic()
        views = squeue(run.job_id for run in self._runs.values())
        if views is None:
            if self._silent_since is None:
                self._silent_since = now
                events.append(
                    ExecutorNotice(
                        "scheduler",
                        "Slurm does not answer squeue (is slurmctld up? `scontrol ping`); "
                        f"waiting up to {self.scheduler_timeout:g}s for it "
                        "(scheduler_timeout_seconds)",
                    )
                )
            waited = now - self._silent_since
            if waited < self.scheduler_timeout:
                return events
            self._lost = True
            raise ClusterLost(
                f"lost the Slurm controller: squeue has failed for {waited:.0f}s "
                f"(scheduler_timeout_seconds = {self.scheduler_timeout:g}); jobs "
                + ", ".join(sorted({r.job_id for r in self._runs.values()}))
                + " may still run",
                in_flight=tuple(sorted(str(k) for k in self._runs)),
                keep_jobs=True,
            )
        if self._silent_since is not None:
            events.append(ExecutorNotice("scheduler", None))
        self._silent_since = None
        for run in list(self._runs.values()):
            if run.killed is not None:
                final = scontrol_show(run.job_id)
                # RUNNING: a lone kill (the OOM killer took the trainer) in a pack that goes on.
                settled = final is not None and (not final.live or final.state == "RUNNING")
                if settled or now - run.killed_at > SETTLE_SECONDS:
                    outcome = with_job_state(run.killed, run.job_id, final, run.job_log)
                    events += self._end(run, outcome)
                continue
            view = views.get(run.job_id)
            if view is not None:
                run.gone_since = None
                events += self._saw(run, view, now)
            elif run.gone_since is None:
                run.gone_since = now  # give its outcome file time to appear
            elif now - run.gone_since >= GONE_GRACE_SECONDS or self._cancelled:
                last = scontrol_show(run.job_id)
                events += self._end(run, self._gone(run, last))
        return events

    def _saw(self, run: SlurmRun, view: JobView, now: float) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = []
        before = run.state
        changed = (view.state, view.reason, view.node) != (run.state, run.reason, run.node)
        note = None
        if before in ("RUNNING", "COMPLETING") and view.state in ("PENDING", "REQUEUED"):
            note = (
                f"job {run.job_id} was requeued ({view.reason or 'preempted or requeued'}); "
                "its run starts again from scratch"
            )
            run.pending_since = now
        if view.state != "PENDING":
            run.pending_since = now
        wait_limit = self.options[run.task.key.host].queue_wait_minutes * 60
        if view.state == "PENDING" and not run.waited_note and now - run.pending_since > wait_limit:
            run.waited_note = True
            note = (
                f"job {run.job_id} has waited {int((now - run.pending_since) // 60)} min in the "
                f"queue ({view.reason or 'no reason given'}); still waiting"
            )
        run.state, run.reason, run.node = view.state, view.reason, view.node
        if changed or note:
            events.append(
                RunJobState(
                    run.task.key,
                    run.task.attempt,
                    run.job_id,
                    view.state,
                    reason=view.reason,
                    node=view.node,
                    note=note,
                )
            )
        return events

    def _gone(self, run: SlurmRun, view: JobView | None) -> RunOutcome:
        """The outcome of a run whose job left the queue without it."""
        task = run.task
        late = read_outcome(task)
        if late is not None:
            return late
        log_tail = tail_text(task.log_path)
        summary = finished_summary(Path(task.out_dir))
        if summary is not None and self._cancelled is None:
            # It finished but the job died before writing the outcome: the result is whole.
            return classify(task, 0, log_tail, worker=f"slurm:{run.job_id}")
        view = view or JobView(run.job_id, run.state, run.reason, run.node)
        return end_outcome(
            task,
            run.job_id,
            view,
            job_log=run.job_log,
            log_tail=log_tail or tail_text(run.job_log),
            job_error=self._job_error(run),
            cancelled=self._cancelled,
        )

    def _job_error(self, run: SlurmRun) -> str | None:
        """The traceback submitit saved when the job's Python failed, if it did."""
        job = submitit.SlurmJob(folder=self._job_folder(run.task), job_id=run.job_id)
        path = job.paths.result_pickle
        if not path.exists():
            return None
        try:
            kind, value = submitit.core.utils.pickle_load(path)
        except Exception:
            return None
        return str(value) if kind == "error" else None

    def _end(self, run: SlurmRun, outcome: RunOutcome) -> list[ExecutorEvent]:
        """The run is over: its job's state as the run saw it, then its outcome."""
        events: list[ExecutorEvent] = list(follow_log(run))
        self._runs.pop(run.task.key, None)
        view = scontrol_show(run.job_id) if outcome.status != "succeeded" else None
        if outcome.status == "succeeded":
            state = "COMPLETED"  # this run's part of the job (a pack may still be running)
        else:
            state = view.state if view is not None else run.state
        events.append(
            RunJobState(
                run.task.key,
                run.task.attempt,
                run.job_id,
                state,
                reason=view.reason if view is not None else run.reason,
                node=(view.node if view is not None else None) or run.node,
            )
        )
        if not outcome.worker:
            outcome = dataclasses.replace(outcome, worker=f"slurm:{run.job_id}")
        if outcome.status == "failed" and run.job_log and run.job_log not in (outcome.cause or ""):
            # Every failure names its job, the job's state and the job's own log.
            outcome = dataclasses.replace(
                outcome,
                cause=f"{outcome.cause}; Slurm job {run.job_id} {state}; job log {run.job_log}",
            )
        events.append(outcome)
        return events


__all__ = [
    "SLURM_FOLDER",
    "SlurmExecutor",
    "SlurmRun",
    "check_slurm",
    "measured",
    "test_submission",
]
