"""A real local Ray cluster for tests, started with the `ray` CLI as a user would.

Each cluster lives in a temp dir of its own, and every process it starts carries a token of
its own in its environment (Ray passes the environment of `ray start` on to every daemon and
worker). It is torn down by killing exactly those processes, by pid, and `stop` asserts that
none is left (never `ray stop`, which would stop every Ray cluster of the machine; a search by
the temp dir alone misses daemons that do not name it, such as `ray.util.client.server`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


TOKEN_ENV = "STAGEWISE_TEST_CLUSTER"


def tagged(token: str) -> set[int]:
    """Live (not zombie) processes whose environment carries `TOKEN_ENV=token`."""
    marker = f"{TOKEN_ENV}={token}".encode()
    found = set()
    for pid in _pids():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.add(pid)
    return found


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            found += kids
            stack += kids
    return found


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def wait_for_none(found: Callable[[], set[int]], timeout: float) -> set[int]:
    """`found()` once it is empty, or what it still holds after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (left := found()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def _label_of(raylet_argv: list[str]) -> str:
    """The blk-* resource a raylet was started with (`--static_resource_list=name,n,...`)."""
    for arg in raylet_argv:
        if arg.startswith("--static_resource_list="):
            names = arg.split("=", 1)[1].split(",")[::2]
            return next(n for n in names if n.startswith("blk-"))
    raise AssertionError(f"no resource list in {raylet_argv}")


class Cluster:
    """A head and labelled worker nodes on loopback, in a temp dir of their own."""

    def __init__(self) -> None:
        # Short: Ray's unix sockets live under it and the path limit is ~107 characters.
        self.temp_dir = f"/tmp/rsw-{secrets.token_hex(4)}"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.labels: dict[str, str] = {}  # node id -> block label (kept after a node dies)
        self.token = secrets.token_hex(8)
        self.pids: set[int] = set()  # every process this cluster started, as seen so far
        self.head_pids: set[int] = set()  # the head's own daemons
        self.env = {
            **os.environ,
            TOKEN_ENV: self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # Declare a dead node dead within seconds, not the default half minute.
            "RAY_health_check_initial_delay_ms": "1000",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.env.pop("RAY_ADDRESS", None)

    def _ray(self, *args: str) -> None:
        proc = subprocess.run(
            [RAY, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, f"ray {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"

    def _seen(self) -> set[int]:
        """Record (and return) the cluster's processes now alive."""
        now = tagged(self.token)
        self.pids |= now
        return now

    def start_head(self, *extra: str, cpus: int = 0) -> None:
        """The head (no CPUs by default: runs go to worker nodes); `extra` ray start flags."""
        self._ray(
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            f"--num-cpus={cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}",  # not the shared default 10001
            f"--temp-dir={self.temp_dir}",
            *extra,
        )
        self.head_pids = self._seen()

    def kill_head(self) -> None:
        """SIGKILL every process of the head (its GCS, raylet, client server, workers)."""
        head = set(self.head_pids)
        for pid in list(head):
            head |= set(children(pid))
        for pid in sorted(head):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def raylets(self) -> dict[str, int]:
        """node id -> raylet pid, for the raylets of this cluster."""
        found = {}
        for pid in _pids():
            argv = _cmdline(pid)
            if (
                not argv
                or not argv[0].endswith("raylet")
                or not any(self.temp_dir in a for a in argv)
            ):
                continue
            for arg in argv:
                if arg.startswith("--node_id="):
                    found[arg.split("=", 1)[1]] = pid
        return found

    def add_node(self, label: str, cpus: int = 1) -> str:
        """Start a worker node with `cpus` CPUs and `{label: cpus}`; returns its node id.

        One at a time: nodes started at once on one machine race for their socket names.
        """
        before = set(self.raylets())
        self._ray(
            "start",
            f"--address={self.address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps({label: cpus})}",
            "--disable-usage-stats",
        )
        new = wait_for(lambda: set(self.raylets()) - before, 30, f"the {label} raylet")
        self._seen()
        (node_id,) = new
        self.labels[node_id] = _label_of(_cmdline(self.raylets()[node_id]))
        assert self.labels[node_id] == label
        return str(node_id)

    def kill_node(self, node_id: str) -> None:
        """SIGKILL a node's raylet and everything under it (its workers, their runs)."""
        pid = self.raylets()[node_id]
        for victim in [pid, *children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

    def stop(self) -> None:
        """Kill every process this cluster started, by pid; assert that none is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            mine = self._seen()
            for pid in sorted(mine | {c for p in mine for c in children(p)}):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if sig == signal.SIGTERM and mine:
                deadline = time.monotonic() + 3
                while tagged(self.token) and time.monotonic() < deadline:
                    time.sleep(0.1)
        left = wait_for_none(lambda: tagged(self.token), 10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not left, "cluster processes left running: " + "; ".join(
            f"{pid} {' '.join(_cmdline(pid))[:120]}" for pid in sorted(left)
        )
