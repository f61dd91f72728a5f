"""The local executor: the slots of this machine, one child process per run.

Each local host lists its slots: `devices = ["cuda:0", "cuda:1"]` gives one worker per GPU with
CUDA_VISIBLE_DEVICES pinned to it (the runner then sees a single `cuda` device), and
`devices = ["cpu"]` with `workers = N` gives N CPU workers. CPU workers share the machine's
cores fairly: each gets STAGEWISE_TORCH_THREADS = max(1, cores // CPU workers that can run at
once). `--workers N` caps how many runs go at once over all local hosts.

A run occupies its slot from `submit` until its outcome is queued; a thread per running run
waits on the child, so `poll` only drains a queue and the driver's loop can hand a freed slot
its next run within one poll interval. Runs of our own runner go to the slot's warm worker
(`executors/warm.py`: one long-lived process per slot, kept for the driver's next stage);
custom argv templates, and every run when `[runner] warm_workers = false`, get a process of
their own (`process.run_task`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from stagewise.errors import ExecutorError
from stagewise.executors.base import Executor, ExecutorEvent, RunOutcome, RunTask
from stagewise.executors.process import run_task
from stagewise.executors.warm import can_run_warm, pooled_worker, run_warm, warm_env
from stagewise.protocol import THREADS_ENV
from stagewise.study.model import Host, Study


class _Cancel(threading.Event):
    reason = "interrupted"


@dataclass
class Slot:
    host: str
    name: str  # "block-a/cuda:1", "block-a/cpu#0"
    env: dict[str, str]
    busy: bool = False


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def host_slots(host: Host) -> list[Slot]:
    """The worker slots a local host declares (CPU slots get their thread count later)."""
    slots = []
    for device in host.devices:
        if device == "cpu":
            for i in range(host.workers or 1):
                slots.append(Slot(host.name, f"{host.name}/cpu#{i}", {"CUDA_VISIBLE_DEVICES": ""}))
        elif device.startswith("cuda:"):
            index = device.split(":", 1)[1]
            slots.append(Slot(host.name, f"{host.name}/{device}", {"CUDA_VISIBLE_DEVICES": index}))
        else:
            raise ExecutorError(
                f"hosts.{host.name}.devices: expected 'cpu' or 'cuda:N', but got {device!r}"
            )
    return slots


class LocalExecutor(Executor):
    kind = "local"

    def __init__(
        self,
        study: Study,
        hosts: Sequence[Host],
        *,
        workers: int | None = None,
        cores: int | None = None,
    ) -> None:
        super().__init__(study, hosts, workers=workers)
        if workers is not None and workers < 1:
            raise ExecutorError(f"--workers must be at least 1, but got --workers {workers}")
        self.slots = [slot for h in hosts for slot in host_slots(h)]
        self.limit = len(self.slots) if workers is None else min(workers, len(self.slots))
        cpu_slots = [s for s in self.slots if s.env.get("CUDA_VISIBLE_DEVICES") == ""]
        concurrent_cpu = min(len(cpu_slots), self.limit)
        self.threads_per_cpu_worker = max(1, (cores or available_cores()) // max(1, concurrent_cpu))
        for slot in cpu_slots:
            slot.env[THREADS_ENV] = str(self.threads_per_cpu_worker)
        self._lock = threading.Lock()
        self._events: queue.Queue[ExecutorEvent] = queue.Queue()
        self._running: dict[str, tuple[Slot, _Cancel, threading.Thread]] = {}
        self.warm_workers = study.runner.get("warm_workers", True) is not False

    # ------------------------------------------------------------------ contract
    def capacity(self, host: str) -> int:
        return min(self.limit, sum(1 for s in self.slots if s.host == host))

    def active(self, host: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self.slots if s.busy and (host is None or s.host == host))

    def free_slots(self, host: str) -> int:
        with self._lock:
            busy_total = sum(1 for s in self.slots if s.busy)
            free_here = sum(1 for s in self.slots if s.host == host and not s.busy)
        return max(0, min(free_here, self.limit - busy_total))

    def submit(self, task: RunTask) -> None:
        with self._lock:
            busy_total = sum(1 for s in self.slots if s.busy)
            slot = next((s for s in self.slots if s.host == task.key.host and not s.busy), None)
            if slot is None or busy_total >= self.limit:
                raise ExecutorError(f"{task.key}: no free local slot on host {task.key.host}")
            slot.busy = True
            cancel = _Cancel()
            thread = threading.Thread(
                target=self._run, args=(task, slot, cancel), name=f"run-{task.key}", daemon=True
            )
            self._running[str(task.key)] = (slot, cancel, thread)
        # The thread starts the child, and lives exactly as long as it: PR_SET_PDEATHSIG
        # fires when the *thread* that forked the child ends, not only the process.
        thread.start()

    def _run(self, task: RunTask, slot: Slot, cancel: _Cancel) -> None:
        try:
            if self.warm_workers and can_run_warm(task):
                env = warm_env(os.environ, slot.env)
                worker = pooled_worker(slot.name, task.argv[0], env)
                outcome = run_warm(task, worker, self._events.put, cancel=cancel, slot=slot.name)
            else:
                outcome = run_task(
                    task, self._events.put, cancel=cancel, extra_env=slot.env, slot=slot.name
                )
        except Exception as exc:  # an executor bug must not hang the stage
            outcome = RunOutcome(
                key=task.key,
                status="failed",
                failure="crash",
                cause=f"crash: executor error {type(exc).__name__}: {exc}",
                log_path=task.log_path,
                worker=slot.name,
                attempt=task.attempt,
            )
        with self._lock:
            slot.busy = False
            self._running.pop(str(task.key), None)
        self._events.put(outcome)

    def poll(self, timeout: float = 0.2) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = []
        try:
            events.append(
                self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
            )
        except queue.Empty:
            return events
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def cancel_all(self, reason: str = "interrupted") -> None:
        with self._lock:
            running = list(self._running.values())
        for _slot, cancel, _thread in running:
            cancel.reason = reason
            cancel.set()

    def close(self) -> None:
        self.cancel_all("executor closed")
        with self._lock:
            threads = [t for _s, _c, t in self._running.values()]
        for thread in threads:
            thread.join(timeout=10)
        # The slots' warm workers stay for the driver's next stage (warm.pooled_worker).


__all__ = ["LocalExecutor", "Slot", "available_cores", "host_slots"]
