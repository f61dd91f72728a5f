"""Studies for executor tests: a fake trainer through an argv template, or the real runner.

Also the real local Slurm cluster of the Slurm tests: `slurm_cluster` (one per session: munged,
slurmctld and slurmd from a temp folder, two partitions `blk-a` and `blk-b`, stopped by pid at
the end with nothing left running; `slurmtools.Cluster`) and `slurm` (per test: SLURM_CONF set
for the test and the CLI it starts, every job of the test cancelled afterwards). Both skip,
saying why, where Slurm is not installed (`.ci/install-slurm`) or submitit is missing.
"""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stagewise.ledger import Ledger
from tests.conftest import run_cli

FAKE = Path(__file__).with_name("fake_trainer.py")

FAKE_COMMAND = [
    "{python}",
    str(FAKE),
    "--mode",
    "{mode}",
    "--out",
    "{out}",
    "--seed",
    "{seed}",
    "--key",
    "{condition_id}/{seed}/{host}",
    "--journal",
    "{study}/journal.txt",
    "--sleep",
    "{sleep}",
    "--batch",
    "{device_batch_size}",
]


def fake_study(
    folder: Path,
    modes: dict[str, int],
    *,
    seeds: tuple[int, ...] = (1,),
    hosts: tuple[str, ...] = ("block-a",),
    workers: int = 1,
    sleep: float = 0.3,
    budget: str = "1s",
    runner_extra: str = "",
    gate: bool = False,
    grace: float = 3,
) -> Path:
    """A study whose conditions run the fake trainer in the given modes."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["label,condition_id,role,mode,sleep"]
    for i, (cid, mode) in enumerate(modes.items()):
        rows.append(f"{cid},{cid},{'reference' if i == 0 else 'variant'},{mode},{sleep}")
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    host_blocks = "".join(
        f'[hosts.{h}]\nexecutor = "local"\ndevices = ["cpu"]\nworkers = {workers}\n' for h in hosts
    )
    gate_block = (
        '[gates.g1]\nkind = "promote"\nstages = ["s1"]\nrules = [{ rule = "best_k", k = 1 }]\n'
        if gate
        else ""
    )
    (folder / "study.toml").write_text(
        f"""[study]
name = "fake"
reference = "{next(iter(modes))}"
matrix = "matrix.csv"
[runner]
command = {json.dumps(FAKE_COMMAND)}
device_batch_size = 16
grace_seconds = {grace}
{runner_extra}
{host_blocks}
[stages.s1]
budget = "{budget}"
seeds = {list(seeds)}
hosts = {json.dumps(list(hosts))}
candidates = "all"
{gate_block}"""
    )
    return with_ledger(folder)


def with_ledger(folder: Path) -> Path:
    """Give a hand-written study folder its (empty) ledger, as `stagewise init` would."""
    Ledger.open(folder).close()
    return folder


def runs(folder: Path) -> dict[str, dict[str, Any]]:
    """The runs table as {"cond/seed/host": row}."""
    conn = sqlite3.connect(folder / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM runs").fetchall()
    conn.close()
    return {f"{r['condition_id']}/{r['seed']}/{r['host']}": dict(r) for r in rows}


def events(folder: Path, kind: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(folder / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM events WHERE kind = ?", (kind,)).fetchall()
    conn.close()
    return [dict(r) for r in rows]


def journal(folder: Path) -> list[list[str]]:
    path = folder / "journal.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`stagewise data prepare --source sample --vocab-size 1024`, once per session."""
    out = tmp_path_factory.mktemp("data") / "data"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stagewise",
            "data",
            "prepare",
            "--source",
            "sample",
            "--out",
            str(out),
            "--vocab-size",
            "1024",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="session")
def shared_ray_cluster() -> Iterator[Any]:
    """One real local Ray cluster for the suites that do not break it: a head without CPUs and
    one `blk-a` node with two CPUs (two slots). Stopped, by pid, at the end of the session."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed")
    from tests.executors.raytools import Cluster

    cluster = Cluster()
    try:
        cluster.start_head()
        cluster.add_node("blk-a", cpus=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real one-node Slurm cluster for the session (partitions blk-a and blk-b)."""
    from tests.executors.slurmtools import Cluster, skip_reason

    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    if importlib.util.find_spec("submitit") is None:
        pytest.skip('the slurm extra is not installed (pip install "stagewise[slurm]")')
    cluster = Cluster(tmp_path_factory.mktemp("slurm-cluster")).start()
    try:
        yield cluster
    finally:
        pids = dict(cluster.pids)
        cluster.stop()  # raises when a daemon is still there after its SIGTERM and SIGKILL
        assert not [p for p in pids.values() if Path(f"/proc/{p}").exists() and _live(p)]


def _live(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def slurm(slurm_cluster: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The session's cluster for one test: SLURM_CONF set, the test's jobs cancelled after."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    try:
        yield slurm_cluster
    finally:
        slurm_cluster.run("scancel", "--full", "--user", "root", check=False)
        slurm_cluster.wait_empty(120)


__all__ = [
    "FAKE",
    "events",
    "fake_study",
    "journal",
    "run_cli",
    "runs",
    "slurm",
    "slurm_cluster",
    "with_ledger",
]
