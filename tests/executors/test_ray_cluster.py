"""The Ray executor on a real local cluster: placement by block label, node loss, driver loss.

The cluster is started with the `ray` CLI as a user would (a head without CPUs, so every run
must go to a worker node, and labelled worker nodes), in a temp dir of its own; it is torn down
by killing exactly the processes of that temp dir (never `ray stop`, which would stop every Ray
cluster of the machine).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MATRIX, TINY_RUNNER
from tests.executors.conftest import FAKE_COMMAND, journal, run_cli, runs, with_ledger
from tests.executors.raytools import Cluster, free_port, wait_for

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(420)]


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
    return with_ledger(folder)


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
    port = free_port()  # closed: nothing listens there
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

        folder, victim = wait_for(running_a, 150, "a block-a run to start training")
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
    return with_ledger(folder)


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
        wait_for(lambda: journal(study), 60, "the run to start")
        pid = int(journal(study)[0][2])
        driver.send_signal(signal.SIGINT)
        out, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode == 130, out + err
    assert runs(study)["ok/1/block-a"]["status"] == "interrupted"
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 20, "the trainer to be stopped")


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
        wait_for(lambda: journal(study), 60, "the run to start")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    pid = int(journal(study)[0][2])
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 30, "the orphaned trainer to die")
    assert runs(study)["ok/1/block-a"]["status"] == "running"  # until a driver recovers it
