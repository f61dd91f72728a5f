"""A real one-node Slurm cluster for tests: munged, slurmctld and slurmd from a temp folder.

Everything the cluster needs lives in its folder: its own munge key and socket (so a munged of
the machine, or of another test, is never touched), a minimal slurm.conf naming this machine
as the controller and the one compute node, free ports, state and spool folders. Two
partitions over the node (`blk-a`, `blk-b`) stand for two host blocks. The daemons are stopped
by the pids they wrote, and `stop()` checks that none is left.

Needs Debian's `slurm-wlm` and `munge` (`.ci/install-slurm`) and root (slurmd starts jobs as
their user). `skip_reason()` says why a cluster cannot start here, for `pytest.skip`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

SBIN = Path("/usr/sbin")
DAEMONS = ("slurmd", "slurmctld", "munged")
PARTITIONS = ("blk-a", "blk-b")


def skip_reason() -> str | None:
    """Why no local Slurm cluster can start here, or None when one can."""
    missing = [
        name
        for name in ("munged", "slurmctld", "slurmd")
        if not (SBIN / name).exists() and shutil.which(name) is None
    ]
    missing += [name for name in ("sbatch", "squeue", "scontrol", "srun") if not shutil.which(name)]
    if missing:
        return (
            f"Slurm is not installed ({', '.join(missing)} missing); run .ci/install-slurm "
            "(Debian: apt-get install -y slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        return "a local Slurm cluster needs root (slurmd starts jobs as their user)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _node_memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    return max(512, total_kb // 1024 - 2048)


class Cluster:
    """One local Slurm cluster; `env` is what a client (sbatch, stagewise) needs to reach it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.conf = self.folder / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pids: dict[str, int] = {}

    # ------------------------------------------------------------------ start
    def start(self, timeout: float = 60.0) -> Cluster:
        for sub in ("state", "spool", "log", "munge"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        try:
            self._start_munge()
            self._write_conf()
            for daemon in ("slurmctld", "slurmd"):
                subprocess.run(
                    [str(SBIN / daemon), "-f", str(self.conf)],
                    env=self.env,
                    check=True,
                    timeout=30,
                    capture_output=True,
                )
                self.pids[daemon] = self._read_pid(daemon)
            self._wait_idle(timeout)
        except BaseException:
            # A daemon that started but whose pid was not read yet is still ours to stop.
            for daemon in DAEMONS:
                pid_file = self.folder / (
                    "munge/munged.pid" if daemon == "munged" else f"{daemon}.pid"
                )
                if daemon not in self.pids:
                    with contextlib.suppress(OSError, ValueError, IndexError):
                        self.pids[daemon] = int(pid_file.read_text().split()[0])
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        munge = self.folder / "munge"
        munge.chmod(0o700)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(
            [
                str(SBIN / "munged"),
                "--force",  # as root: this test cluster's own daemon, own key, own socket
                f"--socket={munge / 'munge.socket'}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={munge / 'munged.log'}",
                f"--seed-file={munge / 'munged.seed'}",
            ],
            check=True,
            timeout=30,
            capture_output=True,
        )
        self.pids["munged"] = self._wait_pid(munge / "munged.pid", "munged")

    def _write_conf(self) -> None:
        d = self.folder
        lines = [
            "ClusterName=stagewise-test",
            f"SlurmctldHost={self.node}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={d / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "MpiDefault=none",
            "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/backfill",
            # Jobs that ended stay visible to `scontrol show job` this long (the executor reads
            # their end state there when sacct is absent); the scheduler looks every second.
            "MinJobAge=600",
            "SchedulerParameters=sched_interval=1",
            f"NodeName={self.node} CPUs={os.cpu_count() or 1} RealMemory={_node_memory_mb()} "
            "State=UNKNOWN",
        ]
        for i, name in enumerate(PARTITIONS):
            default = " Default=YES" if i == 0 else ""
            lines.append(
                f"PartitionName={name} Nodes={self.node}{default} MaxTime=INFINITE State=UP "
                "OverSubscribe=NO"
            )
        self.conf.write_text("\n".join(lines) + "\n")

    def _read_pid(self, daemon: str) -> int:
        return self._wait_pid(self.folder / f"{daemon}.pid", daemon)

    @staticmethod
    def _wait_pid(path: Path, what: str, timeout: float = 15.0) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            # The daemon may have created the file and not yet written its pid.
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(path.read_text().split()[0])
            time.sleep(0.1)
        raise RuntimeError(f"{what} wrote no pid file at {path}")

    def _wait_idle(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        out = ""
        while time.monotonic() < end:
            proc = subprocess.run(
                ["sinfo", "-h", "-o", "%P %T"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=10,
            )
            out = proc.stdout + proc.stderr
            if proc.returncode == 0 and "idle" in proc.stdout:
                return
            time.sleep(0.5)
        log = (self.folder / "log" / "slurmctld.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the Slurm node did not become idle: {out.strip()}\n{log}")

    # ------------------------------------------------------------------ use
    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A Slurm client command against this cluster."""
        return subprocess.run(
            list(argv), env=self.env, capture_output=True, text=True, timeout=60, check=check
        )

    def queue(self) -> list[str]:
        """`<job id> <state>` of every job still in the queue."""
        out = self.run("squeue", "-h", "-o", "%i %T").stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def wait_empty(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.queue():
                return
            time.sleep(0.5)
        raise AssertionError(f"jobs still queued: {self.queue()}")

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Cancel any job, end the daemons by pid, wait until each is gone."""
        if "slurmctld" in self.pids:
            with contextlib.suppress(Exception):
                self.run("scancel", "--full", "--user", "root", check=False)
        for daemon in DAEMONS:
            pid = self.pids.get(daemon)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + 30
        while time.monotonic() < end and any(_alive(p) for p in self.pids.values()):
            time.sleep(0.2)
        for pid in self.pids.values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10  # SIGKILL is final, but the exit takes a moment
        while time.monotonic() < end and any(_alive(p) for p in self.pids.values()):
            time.sleep(0.1)
        left = [f"{d} ({p})" for d, p in self.pids.items() if _alive(p)]
        self.pids.clear()
        if left:
            raise AssertionError(f"Slurm daemons still running after stop: {', '.join(left)}")

    def left_running(self) -> list[int]:
        return [p for p in self.pids.values() if _alive(p)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


__all__ = ["PARTITIONS", "Cluster", "free_port", "skip_reason"]
