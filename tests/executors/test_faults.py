"""The fault suite: one contract over every executor, each case a real fault on a real cluster.

For each executor (local; Ray on a real local cluster; Slurm once it lands) and each fault, a
case asserts the four promises of docs/running.md ("Faults"): every result recorded exactly
once (one `run.succeeded` per run, and the trainer's own journal agrees), one line naming the
fault, an end within a bounded time, and the documented exit code (0 done, 2 refused, 75 the
cluster was lost: resume). A fault that cannot happen on an executor (a local host has no head
to lose) is skipped with the reason.

The runs are the fake trainer (tests/executors/fake_trainer.py) through an argv template: the
executors, not the model, are under test. Timeouts are tight but leave room for a loaded
2-core machine.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.executors.conftest import FAKE_COMMAND, events, journal, run_cli, runs, with_ledger

HAS_RAY = importlib.util.find_spec("ray") is not None
OK, SUMMARY = 0, 6  # fake trainer modes
EXIT_LOST = 75  # docs/running.md: the cluster was lost mid-stage; resume when it is back

pytestmark = pytest.mark.timeout(300)

RAY = pytest.param(
    "ray",
    marks=[
        pytest.mark.ray,
        pytest.mark.skipif(not HAS_RAY, reason="the ray extra is not installed"),
    ],
)
# The session's real one-node Slurm cluster (tests/executors/conftest.py); skips, saying why,
# where Slurm is not installed or not startable (it needs root).
SLURM = pytest.param("slurm", marks=[pytest.mark.slurm])


@dataclass
class Target:
    """One executor under test: its `[hosts.block-a]` table, on its shared cluster (started
    only when a case asks for it) or on a case's own."""

    name: str
    request: pytest.FixtureRequest

    def host_block(self, extra: str = "", cluster: Any = None) -> str:
        if self.name == "local":
            return f'[hosts.block-a]\nexecutor = "local"\ndevices = ["cpu"]\nworkers = 2\n{extra}'
        if self.name == "slurm":
            self.slurm()
            return (
                '[hosts.block-a]\nexecutor = "slurm"\npartition = "blk-a"\ncpus_per_task = 1\n'
                + extra
            )
        if cluster is None:
            cluster = self.request.getfixturevalue("shared_ray_cluster")
        address = cluster.address
        return (
            f'[hosts.block-a]\nexecutor = "ray"\naddress = "{address}"\n'
            f'resources = {{ "blk-a" = 1 }}\n{extra}'
        )

    def slurm(self) -> Any:
        """The Slurm cluster (SLURM_CONF set for this test and the drivers it starts)."""
        return self.request.getfixturevalue("slurm")

    def only(self, *names: str, why: str) -> None:
        if self.name not in names:
            pytest.skip(f"{why}: not a fault of the {self.name} executor")


@pytest.fixture(params=["local", RAY, SLURM])
def target(request: pytest.FixtureRequest) -> Target:
    return Target(request.param, request)


@pytest.fixture
def own_cluster() -> Iterator[Any]:
    """A cluster a case may break (kill its head or its only node); stopped by pid after."""
    from tests.executors.raytools import Cluster

    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.stop()  # asserts that no process it started is left


def study_with(folder: Path, host_block: str, modes: dict[str, int], sleep: float = 0.3) -> Path:
    folder.mkdir(parents=True)
    first = next(iter(modes))
    rows = ["label,condition_id,role,mode,sleep"]
    rows += [
        f"{c},{c},{'reference' if c == first else 'variant'},{m},{sleep}" for c, m in modes.items()
    ]
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    (folder / "study.toml").write_text(
        f"""[study]
name = "faults"
reference = "{first}"
matrix = "matrix.csv"
[runner]
command = {json.dumps(FAKE_COMMAND)}
device_batch_size = 16
grace_seconds = 60
{host_block}
[stages.s1]
budget = "1s"
seeds = [1]
hosts = ["block-a"]
candidates = "all"
"""
    )
    return with_ledger(folder)


def driver(study: Path, *args: str) -> subprocess.Popen[str]:
    """`stagewise run STUDY s1 ...` in the background, plain output (not a terminal)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RAY_ADDRESS": "", "COLUMNS": "200", "NO_COLOR": "1"},
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def started(study: Path, key: str) -> list[int]:
    """Pids of the trainer's starts for run `key` (cond/seed/host), from its journal."""
    return [int(e[2]) for e in journal(study) if e[0] == "start" and e[1] == key]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def status(study: Path) -> dict[str, Any]:
    proc = run_cli("status", study, "--json")
    assert proc.returncode == 0, proc.stderr
    stage: dict[str, Any] = json.loads(proc.stdout)["stages"][0]
    return stage


def assert_exactly_once(study: Path, keys: list[str]) -> None:
    """Every run succeeded, recorded once in the ledger and ended once by the trainer."""
    table = runs(study)
    assert {k: r["status"] for k, r in table.items()} == dict.fromkeys(keys, "succeeded")
    recorded = Counter(e["subject"] for e in events(study, "run.succeeded"))
    assert sorted(recorded.values()) == [1] * len(keys), recorded
    ends = Counter(e[1] for e in journal(study) if e[0] == "end")
    assert ends == dict.fromkeys(keys, 1), ends


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# ---------------------------------------------------------------------- the driver killed
def test_driver_sigkilled_then_resumed_records_every_run_once(
    tmp_path: Path, target: Target
) -> None:
    # SUMMARY: the trainer writes summary.json itself, as our runner does, so a run that
    # finishes in the instant between the driver's death and its ledger write is adopted on
    # resume instead of rerun.
    modes = {f"c{i}": SUMMARY for i in range(5)}
    study = study_with(tmp_path / "s", target.host_block(), modes, sleep=1.0)
    proc = driver(study)
    try:

        def some_done_some_running() -> bool:
            try:
                states = {r["status"] for r in runs(study).values()}
            except Exception:  # the driver has not created the runs yet
                return False
            return {"succeeded", "running"} <= states

        wait_for(some_done_some_running, 120, "a finished and a running run")
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    running_then = {k for k, r in runs(study).items() if r["status"] == "running"}
    assert running_then
    if target.name != "slurm":
        # The trainers die with their driver: no orphan goes on to write results. (Slurm jobs
        # outlive their driver by design: the next driver re-attaches to them.)
        pids = [int(e[2]) for e in journal(study) if e[0] == "start"]
        wait_for(lambda: all(gone(p) for p in pids), 60, "the orphaned trainers to die")

    t0 = time.monotonic()
    resumed = run_cli("run", study, "s1", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert time.monotonic() - t0 < 150
    result = json.loads(resumed.stdout)
    assert_exactly_once(study, [f"c{i}/1/block-a" for i in range(5)])
    taken_over = set(result["recovered"]) | set(result["adopted"]) | set(result["reattached"])
    assert {f"s1/{k.split('/')[0]}/seed1/block-a" for k in running_then} <= taken_over
    # The fault is named once per run it touched: the driver is gone.
    causes = [e["payload"] for e in events(study, "run.interrupted")]
    assert len(causes) == len(result["recovered"])
    assert all("is gone; rerun from scratch" in c for c in causes)


# ---------------------------------------------------------------------- the trainer killed
def test_a_training_process_killed_alone_is_rerun_and_status_shows_the_retry(
    tmp_path: Path, target: Target
) -> None:
    """SIGKILL of the training process (not its driver, task or node) is a fault outside the
    run: rerun under the host's max_retries on every executor, and shown as a retry."""
    study = study_with(tmp_path / "s", target.host_block(), {"victim": OK}, sleep=6.0)
    key = "victim/1/block-a"
    t0 = time.monotonic()
    proc = driver(study)
    try:
        (pid,) = wait_for(lambda: started(study, key), 90, "the trainer to start")
        os.kill(pid, signal.SIGKILL)
        # The rerun is in progress, and `status` says it is a retry and after what.
        stage = wait_for(
            lambda: (s := status(study))["retrying"] and s, 60, "status to show the retry"
        )
        (row,) = stage["retrying"]
        assert row["run"] == "s1/victim/seed1/block-a" and row["attempt"] == 2
        assert "killed: ended by SIGKILL" in row["after"]
        code, out, err = finish(proc, 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, out + err
    assert time.monotonic() - t0 < 180
    notes = [line for line in out.splitlines() if "SIGKILL" in line]
    assert len(notes) == 1 and "fault retry 1 of 3" in notes[0], out
    assert_exactly_once(study, [key])
    assert runs(study)[key]["attempts"] == 2 and len(started(study, key)) == 2


# ---------------------------------------------------------------------- the only node lost
def test_the_only_node_of_a_block_lost_is_reported_and_ends_by_node_wait(
    tmp_path: Path, target: Target, own_cluster: Any
) -> None:
    # Slurm declares a lost node DOWN only after SlurmdTimeout (minutes), and the test cluster
    # has one node: its node loss is Slurm's requeue, covered by test_slurm_cluster.py.
    target.only("ray", why="no node of a block to lose within a test's time")
    own_cluster.start_head()
    node = own_cluster.add_node("blk-a")
    block = target.host_block("node_wait_seconds = 5\n", cluster=own_cluster)
    study = study_with(tmp_path / "s", block, {"ok": OK}, sleep=3.0)
    key = "ok/1/block-a"
    proc = driver(study)
    try:
        wait_for(lambda: started(study, key), 90, "the run to start on the node")
        own_cluster.kill_node(node)
        killed = time.monotonic()
        # Reported within a bounded time, in `status` (and in the live view: stdout below).
        stage = wait_for(lambda: (s := status(study))["waiting"] and s, 30, "status to say it")
        assert time.monotonic() - killed < 30
        (text,) = stage["waiting"]
        assert "no live node" in text and "blk-a" in text and "node_wait_seconds" in text
        code, out, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == EXIT_LOST, out + err
    assert time.monotonic() - killed < 45
    line = one_error_line(err)
    assert "hosts.block-a" in line and "blk-a" in line and "node_wait_seconds" in line
    assert "s1/ok/seed1/block-a" in line and f"stagewise run {study} s1" in line
    assert any(line.startswith("waiting: ") and "blk-a" in line for line in out.splitlines())
    assert runs(study)[key]["status"] == "interrupted"

    own_cluster.add_node("blk-a")  # the block is back: the same command resumes
    resumed = run_cli("run", study, "s1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_exactly_once(study, [key])


# ---------------------------------------------------------------------- the scheduler lost
def test_the_scheduler_lost_mid_stage_ends_with_its_own_code_and_resumes(
    tmp_path: Path, target: Target, own_cluster: Any
) -> None:
    target.only("ray", why="a local host has no scheduler to lose")
    from tests.executors.raytools import _cmdline

    own_cluster.start_head('--resources={"blk-a": 1}', cpus=1)
    # The fixture tracks every daemon of the head, the Ray client server included.
    assert any("ray.util.client.server" in " ".join(_cmdline(p)) for p in own_cluster.pids)
    block = target.host_block("scheduler_timeout_seconds = 4\n", cluster=own_cluster)
    study = study_with(tmp_path / "s", block, {"ok": OK}, sleep=3.0)
    key = "ok/1/block-a"
    proc = driver(study)
    try:
        wait_for(lambda: started(study, key), 90, "the run to start")
        own_cluster.kill_head()
        killed = time.monotonic()
        code, out, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == EXIT_LOST, out + err
    assert time.monotonic() - killed < 30  # 4 s of patience plus detection, not Ray's 60 s
    line = one_error_line(err)
    assert f"lost the Ray cluster at {own_cluster.address}" in line
    assert "scheduler_timeout_seconds" in line and "s1/ok/seed1/block-a" in line
    assert f"stagewise run {study} s1" in line
    # Said while it lasted, not only at the end.
    assert any(x.startswith("waiting: the Ray head at") for x in out.splitlines()), out
    assert runs(study)[key]["status"] == "interrupted"  # not left `running`

    own_cluster.start_head('--resources={"blk-a": 1}', cpus=1)  # the head is back
    resumed = run_cli("run", study, "s1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert_exactly_once(study, [key])


def test_slurmctld_lost_mid_stage_ends_with_its_own_code_and_resume_reattaches(
    tmp_path: Path, target: Target
) -> None:
    target.only("slurm", why="only Slurm has a slurmctld to lose")
    slurm = target.slurm()
    block = target.host_block("scheduler_timeout_seconds = 4\n")
    # The run outlasts the driver's patience: it is still running in its job when the stage
    # ends, and the resumed driver follows it to its end.
    study = study_with(tmp_path / "s", block, {"ok": OK}, sleep=30.0)
    key = "ok/1/block-a"
    proc = driver(study)
    try:
        wait_for(lambda: started(study, key), 120, "the run to start in its job")
        os.kill(slurm.pids["slurmctld"], signal.SIGKILL)
        killed = time.monotonic()
        code, out, err = finish(proc, 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        restart_slurmctld(slurm)
    assert code == EXIT_LOST, out + err
    assert time.monotonic() - killed < 60  # 4 s of patience plus squeue's failing calls
    line = one_error_line(err)
    assert "lost the Slurm controller" in line and "scheduler_timeout_seconds" in line
    assert "s1/ok/seed1/block-a" in line and "re-attaches" in line
    assert f"stagewise run {study} s1" in line
    assert any(line.startswith("waiting: Slurm does not answer") for line in out.splitlines())
    # The run stays with its job (still running on the node): the next driver follows it.
    assert runs(study)[key]["status"] == "running"
    resumed = run_cli("run", study, "s1", "--json")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert json.loads(resumed.stdout)["reattached"] == ["s1/ok/seed1/block-a"]
    assert_exactly_once(study, [key])
    assert len(started(study, key)) == 1  # never run twice


def restart_slurmctld(slurm: Any) -> None:
    """Start the test cluster's slurmctld again (it recovers its jobs from its state folder)."""
    from tests.executors.slurmtools import SBIN

    pid = slurm.pids.get("slurmctld")
    if pid is not None and not gone(pid):
        return
    (slurm.folder / "slurmctld.pid").unlink(missing_ok=True)  # the killed one's: read the new
    subprocess.run(
        [str(SBIN / "slurmctld"), "-f", str(slurm.conf)],
        env=slurm.env,
        check=True,
        timeout=30,
        capture_output=True,
    )
    slurm.pids["slurmctld"] = slurm._read_pid("slurmctld")
    wait_for(lambda: slurm.run("scontrol", "ping", check=False).returncode == 0, 60, "slurmctld")

    def node_up() -> bool:  # slurmd registered again (idle, or busy with the kept job)
        states = slurm.run("sinfo", "-h", "-o", "%T", check=False).stdout.split()
        return any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states)

    wait_for(node_up, 90, "the node to register with the new slurmctld")


# ---------------------------------------------------------------------- a wrong address
@pytest.fixture
def other_service() -> Iterator[int]:
    """Some TCP service that is not a Ray head: a plain HTTP server on a free port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def test_an_address_where_something_else_listens_is_refused_at_once(
    tmp_path: Path, target: Target, other_service: int
) -> None:
    target.only("ray", why="no address to get wrong (Slurm: SLURM_CONF names the controller)")
    address = f"127.0.0.1:{other_service}"
    block = f'[hosts.block-a]\nexecutor = "ray"\naddress = "{address}"\n'
    block += 'resources = { "blk-a" = 1 }\n'
    study = study_with(tmp_path / "s", block, {"ok": OK})
    t0 = time.monotonic()
    proc = run_cli("run", study, "s1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 60
    line = one_error_line(proc.stderr)
    assert f"{address} is not a Ray cluster" in line and "HTTP" in line, line
    assert runs(study)["ok/1/block-a"]["status"] == "pending"  # nothing was claimed


# ---------------------------------------------------------------------- a resource short
def test_a_resource_no_node_offers_is_named(tmp_path: Path, target: Target) -> None:
    target.only("ray", "slurm", why="a local host asks no cluster for resources")
    if target.name == "slurm":
        block = target.host_block().replace("cpus_per_task = 1", "cpus_per_task = 4096")
    else:
        block = target.host_block("num_cpus = 4\n")
    study = study_with(tmp_path / "s", block, {"ok": OK})
    proc = run_cli("run", study, "s1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_error_line(proc.stderr)
    if target.name == "slurm":  # Slurm's own words, from `sbatch --test-only`
        assert "Requested node configuration is not available" in line, line
        assert "short on partition blk-a: CPU" in line and "cpus_per_task = 4096" in line, line
    else:
        # The short resource is named (CPU), not the label every node already offers.
        assert "CPU=4" in line and "short: CPU" in line and "hosts.block-a.num_cpus" in line
        assert "--num-cpus=4" in line
    assert runs(study)["ok/1/block-a"]["status"] == "pending"
    assert not journal(study)
