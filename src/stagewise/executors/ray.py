"""The Ray executor: each run of a `executor = "ray"` host is one Ray task on a labelled node.

A host block is one kind of node. Its runs ask Ray for the host's `resources` (custom labels
such as `{"linux-l40s" = 1}` that only that kind of node advertises, set with
`ray start --resources`), plus `num_cpus` (default 1) and `num_gpus` (default 0, or 1 when the
host lists cuda devices), so Ray places them only on nodes of that block. Inside the task the
node runs the same argv as the local executor: our runner on the warm worker of that Ray
worker process (`executors/warm.py`; Ray reuses one worker process per node slot, so the slot's
runs share one warm worker), a custom template through `process.run_task` (its own process);
either way with the full log, timeout and classification. It returns the `RunOutcome`: summary,
log tail, checkpoint path, and `worker = "ray:<node ip>/<node id>"`, the node that ran it.

Faults:
- A node (or worker process) that dies mid-run: Ray reruns the task on another node carrying
  the same label, up to `max_retries` times (`[hosts.x] max_retries`, default 3). Failures of
  the run itself (exit codes, NaN) are outcomes, not exceptions, so Ray never retries those;
  the stage driver decides (`--retries`).
- The driver dies: Ray ends the tasks and worker processes it owns (the runs' processes and warm
  workers die with them, by their parent-death signal); the ledger puts the runs it had
  claimed back to `interrupted` on the next `stagewise run`.
- An unreachable cluster fails at once with the address and the command that starts one.

Progress: the task writes the run's log where the local executor would (`<study>/runs/...`).
On one machine, or with the study folder on a shared filesystem, the driver tails that file and
forwards `progress:` lines; otherwise the view shows running/finished counts only.

Ray is imported only here (and only when a stage has a Ray host): `pip install "stagewise[ray]"`.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stagewise.errors import ClusterLost, ExecutorError
from stagewise.executors.base import (
    Executor,
    ExecutorEvent,
    ExecutorNotice,
    RunOutcome,
    RunTask,
    host_seconds,
)
from stagewise.executors.process import run_task
from stagewise.executors.ray_support import (
    START_HINT,
    LogTail,
    RayRun,
    follow_log,
    greet,
    host_port,
    max_retries,
    requirements,
    runs_fitting,
    shortage,
)
from stagewise.executors.warm import WarmWorker, can_run_warm, run_warm, warm_env
from stagewise.protocol import THREADS_ENV
from stagewise.study.model import Host, Study

try:
    import ray as _ray
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ExecutorError(
        'the ray executor needs Ray; install it with `pip install "stagewise[ray]"`'
    ) from None
ray: Any = _ray  # used untyped: Ray's own annotations do not cover its remote-function API

CONNECT_TIMEOUT_SECONDS = 5.0  # a reachable head answers a TCP connect at once
NODES_REFRESH_SECONDS = 2.0  # how stale the driver's view of the cluster's nodes may be
PROBE_SECONDS = 1.0  # how often the driver checks that the head still accepts connections
SCHEDULER_TIMEOUT_SECONDS = 30.0  # default wait for a head that stopped answering
# Ray's own driver ends the process (exit 1, no word from us) when the GCS is gone this long;
# it must stay longer than our own wait, so that the stage ends with our message and code.
RAY_GCS_RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"


# ---------------------------------------------------------------------- inside the task
# The warm worker of this Ray worker process (Ray keeps one per node slot and reuses it for the
# job's tasks): (its python and environment, the worker). Replaced when a task needs another
# interpreter or GPU; it dies with this process (parent-death signal of its spawning thread).
_WARM: list[tuple[str, WarmWorker]] = []


def _warm_worker(python: str, env: dict[str, str], slot: str) -> WarmWorker:
    key = json.dumps([python, sorted(env.items())])
    if _WARM and _WARM[0][0] == key:
        return _WARM[0][1]
    while _WARM:
        _WARM.pop()[1].close()
    worker = WarmWorker(python, env, slot)
    _WARM.append((key, worker))
    return worker


def _execute_on_node(
    task: RunTask, threads: int, gpus: float, driver_python: str, warm: bool = False
) -> RunOutcome:
    """The body of the Ray task: run one attempt on this node and return its outcome.

    The run goes to this node slot's warm worker when it is our runner and `warm` is on, else
    to a process of its own. It is driven from a thread so that `ray.cancel` (a
    KeyboardInterrupt in this thread) can stop the child cleanly, and so a per-run child's
    parent-death signal is tied to a thread that lives exactly as long as the child.
    """
    ctx = ray.get_runtime_context()
    slot = f"ray:{ray.util.get_node_ip_address()}/{ctx.get_node_id()}"
    if task.argv[0] == driver_python and not os.path.exists(driver_python):
        # The driver's interpreter path does not exist here: use this node's (same stagewise).
        task = dataclasses.replace(task, argv=(sys.executable, *task.argv[1:]))
    env = {THREADS_ENV: str(max(1, threads))}
    if gpus <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # Ray pins the GPUs it grants; none were granted
    cancel = threading.Event()
    result: list[RunOutcome] = []

    def target() -> None:
        if warm and can_run_warm(task):
            worker = _warm_worker(task.argv[0], warm_env(os.environ, env), slot)
            result.append(run_warm(task, worker, lambda _event: None, cancel=cancel, slot=slot))
        else:
            result.append(
                run_task(task, lambda _event: None, cancel=cancel, extra_env=env, slot=slot)
            )

    thread = threading.Thread(target=target, name=f"run-{task.key}", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except KeyboardInterrupt:  # ray.cancel(): stop the child, then let Ray see the cancel
        cancel.set()
        thread.join()
        raise
    if not result:
        raise RuntimeError(f"{task.key}: run_task ended without an outcome")
    return result[0]


# ---------------------------------------------------------------------- connecting
def resolve_address(address: str | None) -> str:
    """The concrete `host:port` (or `ray://host:port`) that `address` means."""
    if address in (None, "", "auto"):
        env = os.environ.get("RAY_ADDRESS")
        if env and env != "auto":
            return env
        services = importlib.import_module("ray._private.services")
        try:
            found = services.canonicalize_bootstrap_address("auto")
        except Exception:
            found = None
        if not found:
            raise ExecutorError(
                'address = "auto": no running Ray cluster found on this machine (and '
                f"RAY_ADDRESS is not set); {START_HINT}"
            )
        return str(found)
    return address


def connect(
    address: str | None,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
    scheduler_timeout: float = SCHEDULER_TIMEOUT_SECONDS,
) -> str:
    """Connect this process to the Ray cluster at `address`; one clear error if we cannot.

    Every step is bounded: the TCP connection and the HTTP/2 greeting take `timeout` each, so
    an address where some other service listens is refused at once (naming what answered)
    instead of Ray retrying its GCS there for ever.
    """
    target = resolve_address(address)
    if ray.is_initialized():
        return target
    endpoint = host_port(target)
    if endpoint is None:
        raise ExecutorError(f'Ray address {target!r} is not host:port, ray://host:port or "auto"')
    try:
        answered = greet(endpoint, timeout)
    except OSError as exc:
        raise ExecutorError(
            f"cannot reach the Ray cluster at {target} ({exc.strerror or exc}); is it running? "
            f"{START_HINT}"
        ) from None
    if answered is not None:
        raise ExecutorError(
            f"{target} is not a Ray cluster: something else listens there ({answered}); check "
            "the address (`ray start --head` prints it; the head listens on port 6379 by "
            "default, the Ray client on 10001)"
        )
    os.environ.setdefault(RAY_GCS_RECONNECT_ENV, str(int(max(60.0, scheduler_timeout + 30.0))))
    try:
        ray.init(
            address=target,
            namespace="stagewise",
            log_to_driver=False,  # runs keep their own logs; Ray's would flood the terminal
            logging_level=logging.WARNING,
        )
    except Exception as exc:
        raise ExecutorError(
            f"cannot connect to the Ray cluster at {target}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    # Ray prints cluster messages ("Task ... failed. There are 3 retries remaining") on the
    # driver's stdout, which must stay ours (`--json`); the outcomes carry what matters.
    worker_module: Any = importlib.import_module("ray._private.worker")
    if hasattr(worker_module, "_worker_logs_enabled"):
        worker_module._worker_logs_enabled = False
    return target


# ---------------------------------------------------------------------- the driver side
class RayExecutor(Executor):
    kind = "ray"

    def __init__(
        self,
        study: Study,
        hosts: Sequence[Host],
        *,
        workers: int | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__(study, hosts, workers=workers)
        if workers is not None and workers < 1:
            raise ExecutorError(f"--workers must be at least 1, but got --workers {workers}")
        addresses = {h.address or "auto" for h in hosts}
        if len(addresses) > 1:
            raise ExecutorError(
                "the ray hosts of one stage must use one cluster, but got addresses "
                + ", ".join(sorted(addresses))
            )
        self.scheduler_timeout = min(
            [SCHEDULER_TIMEOUT_SECONDS]
            + [
                t
                for h in hosts
                if (t := host_seconds(h, "scheduler_timeout_seconds", None)) is not None
            ]
        )
        self.address = connect(
            next(iter(addresses), "auto"), connect_timeout, self.scheduler_timeout
        )
        self.needs = {h.name: requirements(h) for h in hosts}
        self.max_retries = {h.name: max_retries(h) for h in hosts}
        self._remote = ray.remote(_execute_on_node)
        self._pending: dict[Any, RayRun] = {}
        self._reason = "interrupted"  # what cancel_all was told, for the outcomes it causes
        self._nodes: list[dict[str, Any]] = [n for n in ray.nodes() if n.get("Alive")]
        self._nodes_at = time.monotonic()
        self._endpoint = host_port(self.address)
        self._down_since: float | None = None  # since when the head refuses connections
        self._lost = False
        self._head_notice = False
        self._stop = threading.Event()
        for h in hosts:
            if self.capacity(h.name) < 1:
                ray.shutdown()
                raise ExecutorError(self.shortage(h.name))
        # The cluster is watched from threads of their own: with the head gone, Ray's calls to
        # it (`ray.nodes()`) block, and the driver must still see that, say so and end.
        for target, name in ((self._probe_head, "head"), (self._refresh_nodes, "nodes")):
            threading.Thread(target=target, name=f"ray-{name}", daemon=True).start()

    # ------------------------------------------------------------------ cluster view
    def nodes(self) -> list[dict[str, Any]]:
        """Live nodes as `ray.nodes()` reported them at most a few seconds ago."""
        return self._nodes

    def _refresh_nodes(self) -> None:
        while not self._stop.wait(NODES_REFRESH_SECONDS):
            if self._down_since is not None:
                continue  # the head does not answer: keep the last view
            with contextlib.suppress(Exception):
                self._nodes = [n for n in ray.nodes() if n.get("Alive")]
                self._nodes_at = time.monotonic()

    def _probe_head(self) -> None:
        """Whether the head still accepts connections, once a second (a bounded connect)."""
        assert self._endpoint is not None
        while not self._stop.wait(PROBE_SECONDS):
            try:
                socket.create_connection(self._endpoint, timeout=PROBE_SECONDS).close()
                self._down_since = None
            except OSError:
                if self._down_since is None:
                    self._down_since = time.monotonic()

    def _head_events(self) -> list[ExecutorEvent]:
        """A notice while the head does not answer; ClusterLost once that lasted too long."""
        down = self._down_since
        if down is None:
            if self._head_notice:
                self._head_notice = False
                return [ExecutorNotice("scheduler", None)]
            return []
        waited = time.monotonic() - down
        if waited > self.scheduler_timeout:
            self._lost = True
            raise ClusterLost(
                f"lost the Ray cluster at {self.address}: its head has not answered for "
                f"{waited:.0f}s (scheduler_timeout_seconds = {self.scheduler_timeout:g})",
                in_flight=tuple(sorted(str(p.task.key) for p in self._pending.values())),
            )
        if self._head_notice:
            return []
        self._head_notice = True
        return [
            ExecutorNotice(
                "scheduler",
                f"the Ray head at {self.address} does not answer; waiting up to "
                f"{self.scheduler_timeout:g}s for it (scheduler_timeout_seconds)",
            )
        ]

    def shortage(self, host: str) -> str:
        nodes = [n.get("Resources", {}) for n in self.nodes()]
        return shortage(self.hosts[host], self.needs[host], nodes, self.address)

    # ------------------------------------------------------------------ contract
    def capacity(self, host: str) -> int:
        need = self.needs[host]
        total = sum(runs_fitting(n.get("Resources", {}), need) for n in self.nodes())
        return total if self.workers is None else min(total, self.workers)

    def active(self, host: str | None = None) -> int:
        return sum(1 for p in self._pending.values() if host is None or p.task.key.host == host)

    def free_slots(self, host: str) -> int:
        free = self.capacity(host) - self.active(host)
        if self.workers is not None:
            free = min(free, self.workers - self.active())
        return max(0, free)

    def submit(self, task: RunTask) -> None:
        host = self.hosts[task.key.host]
        need = self.needs[host.name]
        custom = {k: v for k, v in need.items() if k not in ("CPU", "GPU")}
        ref = self._remote.options(
            name=f"stagewise:{task.key}",
            num_cpus=need.get("CPU", 0.0),
            num_gpus=need.get("GPU", 0.0),
            resources=custom,
            max_retries=self.max_retries[host.name],
            retry_exceptions=False,  # a failing run is an outcome; only node loss is retried
        ).remote(
            task,
            int(need.get("CPU", 1.0)),
            need.get("GPU", 0.0),
            sys.executable,
            self.study.runner.get("warm_workers", True) is not False,
        )
        self._pending[ref] = RayRun(task, ref, LogTail(Path(task.log_path)))

    def poll(self, timeout: float = 0.2) -> list[ExecutorEvent]:
        events: list[ExecutorEvent] = self._head_events()
        for pending in list(self._pending.values()):
            events += follow_log(pending)
        if not self._pending:
            if timeout > 0 and not events:
                time.sleep(timeout)
            return events
        refs = list(self._pending)
        wait = 0.0 if events else max(0.0, timeout)
        ready, _ = ray.wait(refs, num_returns=1, timeout=wait)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            pending = self._pending.pop(ref)
            events += follow_log(pending)
            events.append(self._outcome(pending))
        return events

    def cancel_all(self, reason: str = "interrupted") -> None:
        self._reason = reason
        if self._lost:
            return  # the head is gone: its tasks end with it (and their runs by parent death)
        for ref in list(self._pending):
            # Already finished, or its node is gone: nothing left to stop.
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=False)

    def close(self) -> None:
        self._stop.set()
        if self._lost:
            # With the head gone Ray's shutdown blocks for ever, here and at exit: skip it; the
            # process ends and its tasks, workers and runs die with the cluster.
            atexit.unregister(ray.shutdown)
            with contextlib.suppress(Exception):
                atexit.unregister(importlib.import_module("ray._private.worker").shutdown)
            return
        if self._pending:
            self.cancel_all("executor closed")
            deadline = time.monotonic() + 10
            while self._pending and time.monotonic() < deadline:
                self.poll(0.2)
        if ray.is_initialized():
            ray.shutdown()

    # ------------------------------------------------------------------ internals
    def _outcome(self, pending: RayRun) -> RunOutcome:
        task = pending.task
        common: dict[str, Any] = dict(
            key=task.key, log_path=task.log_path, attempt=task.attempt, worker=pending.slot
        )
        exceptions = ray.exceptions
        try:
            outcome: RunOutcome = ray.get(pending.ref)
            if pending.starts > 1:  # Ray reran it after a lost node or worker
                outcome = dataclasses.replace(outcome, fault_reruns=pending.starts - 1)
            return outcome
        except exceptions.TaskCancelledError:
            return RunOutcome(status="interrupted", cause=self._reason, **common)
        except exceptions.OutOfMemoryError as exc:
            return RunOutcome(
                status="failed", failure="oom", cause=f"oom: {_first_line(exc)}", **common
            )
        except (
            exceptions.WorkerCrashedError,
            exceptions.NodeDiedError,
            exceptions.LocalRayletDiedError,
            exceptions.ObjectLostError,
            exceptions.RaySystemError,
        ) as exc:
            retries = self.max_retries[task.key.host]
            return RunOutcome(
                status="failed",
                failure="lost",
                cause=f"lost: the Ray worker running it died {retries + 1} time(s) "
                f"({type(exc).__name__}: {_first_line(exc)})",
                fault_reruns=retries,  # Ray spent the fault policy's reruns already
                **common,
            )
        except exceptions.RayTaskError as exc:
            return RunOutcome(
                status="failed",
                failure="crash",
                cause=f"crash: executor error on the Ray node: {_first_line(exc)}",
                **common,
            )
        except exceptions.RayError as exc:
            return RunOutcome(
                status="failed",
                failure="lost",
                cause=f"lost: {type(exc).__name__}: {_first_line(exc)}",
                **common,
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


__all__ = [
    "LogTail",
    "RayExecutor",
    "RayRun",
    "connect",
    "follow_log",
    "requirements",
    "resolve_address",
    "runs_fitting",
]
