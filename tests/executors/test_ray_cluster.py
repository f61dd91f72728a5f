"""The Ray executor on a real local cluster: placement by block label, node loss, driver loss.

The cluster is started with the `ray` CLI as a user would (a head without CPUs, so every run
must go to a worker node, and labelled worker nodes), in a temp dir of its own; it is torn down
by killing exactly the processes of that temp dir (never `ray stop`, which would stop every Ray
cluster of the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MATRIX, TINY_RUNNER
from tests.executors.conftest import FAKE_COMMAND, journal, run_cli, runs

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]

RAY = str(Path(sys.executable).with_name("ray"))


STUDY = (
    """\
[study]
name = "tiny-ray"
reference = "c_a"
matrix = "matrix.csv"
"""
    + TINY_RUNNER
    + """\
[hosts.block-a]
executor = "ray"
address = "{address}"
resources = {{ "blk-a" = 1 }}
[hosts.block-b]
executor = "ray"
address = "{address}"
resources = {{ "blk-b" = 1 }}
[stages.s1]
budget = "4s"
seeds = [1]
hosts = ["block-a", "block-b"]
candidates = "all"
"""
)


# ---------------------------------------------------------------------- the cluster
def _free_port() -> int:
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


def _children(pid: int) -> list[int]:
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


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


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
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.labels: dict[str, str] = {}  # node id -> block label (kept after a node dies)
        self.env = {
            **os.environ,
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

    def start_head(self) -> None:
        self._ray(
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.port}",
            "--num-cpus=0",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        )

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

    def add_node(self, label: str) -> str:
        """Start a worker node with one CPU and `{label: 1}`; returns its node id.

        One at a time: nodes started at once on one machine race for their socket names.
        """
        before = set(self.raylets())
        self._ray(
            "start",
            f"--address={self.address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--resources={json.dumps({label: 1})}",
            "--disable-usage-stats",
        )
        new = _wait_for(lambda: set(self.raylets()) - before, 30, f"the {label} raylet")
        (node_id,) = new
        self.labels[node_id] = _label_of(_cmdline(self.raylets()[node_id]))
        assert self.labels[node_id] == label
        return str(node_id)

    def kill_node(self, node_id: str) -> None:
        """SIGKILL a node's raylet and everything under it (its workers, their runs)."""
        pid = self.raylets()[node_id]
        for victim in [pid, *_children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)

    def stop(self) -> None:
        """Kill every process of this cluster (found by its temp dir), then remove the dir."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            mine = [p for p in _pids() if any(self.temp_dir in a for a in _cmdline(p))]
            mine = sorted(set(mine + [c for p in mine for c in _children(p)]))
            for pid in mine:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if sig == signal.SIGTERM and mine:
                time.sleep(2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    try:
        c.start_head()
        for label in ("blk-a", "blk-a", "blk-b"):  # two of block a: one is killed
            c.add_node(label)
        yield c
    finally:
        c.stop()


def _study(folder: Path, data: Path, address: str, conditions: int = 3) -> Path:
    folder.mkdir(parents=True)
    (folder / "matrix.csv").write_text("".join(MATRIX.splitlines(True)[: 1 + conditions]))
    (folder / "study.toml").write_text(STUDY.format(data=data, address=address))
    return folder


def _node_of(worker: str | None) -> str:
    """`ray:<ip>/<node id>` -> node id."""
    assert worker and worker.startswith("ray:"), worker
    return worker.rsplit("/", 1)[1]


def _log_nodes(study: Path) -> dict[str, str]:
    """run folder -> node id of its current train.log (from the log's first line)."""
    found = {}
    for log in study.glob("runs/s1/*/*/train.log"):
        first = log.read_text(errors="replace").split("\n", 1)[0]
        if " on ray:" in first:
            found[str(log.parent)] = first.rsplit("/", 1)[1].strip()
    return found


def _any_succeeded(study: Path) -> bool:
    try:
        return any(r["status"] == "succeeded" for r in runs(study).values())
    except sqlite3.Error:  # the driver has not created the ledger yet
        return False


# ---------------------------------------------------------------------- tests
def test_unreachable_cluster_is_one_clear_line(tmp_path: Path, sample_data: Path) -> None:
    port = _free_port()  # closed: nothing listens there
    study = _study(tmp_path / "s", sample_data, f"127.0.0.1:{port}")
    started = time.monotonic()
    proc = run_cli("run", study, "s1", "--allow-unfrozen")
    assert proc.returncode != 0
    assert time.monotonic() - started < 60
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"127.0.0.1:{port}" in err and "ray start --head" in err, err
    # Nothing was claimed: the runs are still pending.
    assert all(r["status"] == "pending" for r in runs(study).values())


def test_stage_places_runs_by_block_and_survives_node_loss(
    cluster: Cluster, tmp_path: Path, sample_data: Path
) -> None:
    study = _study(tmp_path / "s", sample_data, cluster.address)
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1", "--allow-unfrozen", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    try:
        # The first run of block-a that has started training: kill the node it runs on.
        def running_a() -> tuple[str, str] | None:
            for folder, node in _log_nodes(study).items():
                log = Path(folder) / "train.log"
                if "seed1-block-a" in folder and "progress:" in log.read_text(errors="replace"):
                    return folder, node
            return None

        folder, victim = _wait_for(running_a, 150, "a block-a run to start training")
        assert cluster.labels[victim] == "blk-a"
        cluster.kill_node(victim)
        out, err = driver.communicate(timeout=200)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 0, out + err
    (tmp_path / "result.json").write_text(out)
    result = json.loads(out)
    assert len(result["succeeded"]) == 6 and not result["failed"]

    # Every run ran on a node of its block, and the killed one finished elsewhere.
    for row in result["succeeded"]:
        node = _node_of(row["worker"])
        want = "blk-a" if row["host"] == "block-a" else "blk-b"
        assert cluster.labels.get(node) == want, (row["run"], node, cluster.labels)
    killed = [r for r in result["succeeded"] if Path(r["log"]).parent == Path(folder)]
    assert len(killed) == 1
    assert _node_of(killed[0]["worker"]) != victim
    earlier = Path(folder) / "train.attempt1.log"  # the try on the dead node, kept aside
    assert earlier.exists() and f"/{victim}" in earlier.read_text().split("\n", 1)[0]
    # Node loss is Ray's retry, invisible to the ledger: one attempt, one result, once.
    table = runs(study)
    assert len(table) == 6
    for key, row in table.items():
        assert row["status"] == "succeeded", (key, row["cause"])
        assert row["attempts"] == 1 and 0 < row["val_bpb"] < 20
        assert row["checkpoint_sha256"]


# ---------------------------------------------------------------------- contract
FAKE_STUDY = """\
[study]
name = "fake-ray"
reference = "{reference}"
matrix = "matrix.csv"
[runner]
command = {command}
device_batch_size = 16
grace_seconds = 3
[hosts.block-a]
executor = "ray"
address = "{address}"
resources = {{ "blk-a" = 1 }}
[stages.s1]
budget = "1s"
seeds = [1]
hosts = ["block-a"]
candidates = "all"
"""


def _fake_study(folder: Path, address: str, modes: dict[str, int], sleep: float = 0.3) -> Path:
    """A one-block Ray study whose conditions run the fake trainer in the given modes."""
    folder.mkdir(parents=True)
    first = next(iter(modes))
    rows = ["label,condition_id,role,mode,sleep"]
    rows += [
        f"{c},{c},{'reference' if c == first else 'variant'},{m},{sleep}" for c, m in modes.items()
    ]
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    (folder / "study.toml").write_text(
        FAKE_STUDY.format(command=json.dumps(FAKE_COMMAND), address=address, reference=first)
    )
    return folder


def test_run_failures_are_outcomes_not_ray_retries(cluster: Cluster, tmp_path: Path) -> None:
    """Same contract as local runs: NaN never retried, crashes retried by --retries only."""
    study = _fake_study(
        tmp_path / "s", cluster.address, {"ok": 0, "nan": 1, "crash": 2, "flaky": 5}
    )
    proc = run_cli("run", study, "s1", "--retries", "1", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    table = runs(study)
    assert table["ok/1/block-a"]["status"] == "succeeded"
    assert table["flaky/1/block-a"]["status"] == "succeeded"
    assert table["flaky/1/block-a"]["attempts"] == 2
    nan = table["nan/1/block-a"]
    assert nan["status"] == "failed" and nan["cause"].startswith("diverged")
    crash = table["crash/1/block-a"]
    assert crash["status"] == "failed" and "exit code 1" in crash["cause"]
    assert "something broke" in crash["log_tail"] and crash["attempts"] == 2
    starts = [e[1] for e in journal(study) if e[0] == "start"]
    # Ray started each run once per driver attempt: it never retried a run failure itself.
    want = {"ok/1/block-a": 1, "nan/1/block-a": 1, "crash/1/block-a": 2, "flaky/1/block-a": 2}
    assert Counter(starts) == want
    for row in json.loads(proc.stdout)["succeeded"]:
        assert cluster.labels.get(_node_of(row["worker"])) == "blk-a"


def test_ctrl_c_cancels_the_ray_tasks_and_marks_runs_interrupted(
    cluster: Cluster, tmp_path: Path
) -> None:
    study = _fake_study(tmp_path / "s", cluster.address, {"ok": 3})  # mode 3: hangs
    study.joinpath("study.toml").write_text(
        study.joinpath("study.toml").read_text().replace("grace_seconds = 3", "grace_seconds = 300")
    )
    argv = [sys.executable, "-m", "stagewise", "run", str(study), "s1", "--json"]
    driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: journal(study), 60, "the run to start")
        pid = int(journal(study)[0][2])
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, out + err
    assert runs(study)["ok/1/block-a"]["status"] == "interrupted"
    _wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, "the trainer to be stopped")


def test_ray_and_local_hosts_run_in_one_stage(cluster: Cluster, tmp_path: Path) -> None:
    study = _fake_study(tmp_path / "s", cluster.address, {"ok": 0, "ok2": 0})
    text = study.joinpath("study.toml").read_text()
    text = text.replace(
        "[stages.s1]", '[hosts.laptop]\nexecutor = "local"\ndevices = ["cpu"]\n[stages.s1]'
    ).replace('hosts = ["block-a"]', 'hosts = ["block-a", "laptop"]')
    study.joinpath("study.toml").write_text(text)
    proc = run_cli("run", study, "s1", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)["succeeded"]
    assert len(rows) == 4
    for row in rows:
        if row["host"] == "laptop":
            assert row["worker"] == "laptop/cpu#0"
        else:
            assert cluster.labels.get(_node_of(row["worker"])) == "blk-a"
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in runs(study).values())


def test_a_block_without_a_node_is_refused_before_anything_runs(
    cluster: Cluster, tmp_path: Path
) -> None:
    study = _fake_study(tmp_path / "s", cluster.address, {"ok": 0})
    text = study.joinpath("study.toml").read_text().replace('"blk-a" = 1', '"blk-z" = 1')
    study.joinpath("study.toml").write_text(text)
    proc = run_cli("run", study, "s1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "blk-z" in proc.stderr and "ray start --address=" in proc.stderr, proc.stderr
    assert runs(study)["ok/1/block-a"]["status"] == "pending"
    assert not journal(study)


def test_a_killed_driver_takes_its_runs_on_the_nodes_with_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    """No orphan keeps training (and writing into the out dir a rerun uses) after SIGKILL."""
    study = _fake_study(tmp_path / "s", cluster.address, {"ok": 3})  # mode 3: hangs
    study.joinpath("study.toml").write_text(
        study.joinpath("study.toml").read_text().replace("grace_seconds = 3", "grace_seconds = 300")
    )
    argv = [sys.executable, "-m", "stagewise", "run", str(study), "s1"]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: journal(study), 60, "the run to start")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    pid = int(journal(study)[0][2])
    _wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "the orphaned trainer to die")
    assert runs(study)["ok/1/block-a"]["status"] == "running"  # until a driver recovers it


def test_driver_killed_and_restarted_repeats_nothing(cluster: Cluster, tmp_path: Path) -> None:
    """SIGKILL the driver mid-stage: the restart reruns only what had not finished."""
    study = _fake_study(tmp_path / "s", cluster.address, {f"r{i}": 0 for i in range(4)}, sleep=2)
    argv = [sys.executable, "-m", "stagewise", "run", str(study), "s1"]
    driver = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: _any_succeeded(study), 90, "a first finished run")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    before = {k: r for k, r in runs(study).items() if r["status"] == "succeeded"}
    assert 0 < len(before) < 4
    again = run_cli("run", study, "s1", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(again.stdout)
    assert sorted(result["already_finished"]) == sorted(
        f"s1/{k.split('/')[0]}/seed1/block-a" for k in before
    )
    assert len(result["succeeded"]) == 4 - len(before)
    table = runs(study)
    assert all(r["status"] == "succeeded" for r in table.values())
    for key, row in before.items():  # finished runs were not touched
        assert table[key]["finished_at"] == row["finished_at"]
        assert table[key]["attempts"] == 1
    starts = Counter(e[1] for e in journal(study) if e[0] == "start")
    assert all(starts[key] == 1 for key in before)  # never repeated
    assert all(1 <= n <= 2 for n in starts.values()) and len(starts) == 4
