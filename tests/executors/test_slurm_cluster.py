"""The Slurm executor on a real local cluster (munged + slurmctld + slurmd, two partitions).

The cluster is the `slurm_cluster` fixture of tests/executors/conftest.py: partitions `blk-a`
and `blk-b` over this machine stand for two host blocks. It has no accounting (no sacct), as
many clusters do: job state comes from squeue and scontrol. Every test drives the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stagewise.executors.recovery import recover_stale
from stagewise.ledger import Ledger, RunKey
from stagewise.study import load_study
from tests.conftest import TINY_RUNNER
from tests.executors.conftest import FAKE_COMMAND, journal, run_cli, runs, with_ledger

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

OK, NAN, CRASH, HANG, OOM, FLAKY, SUMMARY = range(7)


def slurm_host(name: str, partition: str, extra: str = "") -> str:
    return (
        f'[hosts.{name}]\nexecutor = "slurm"\npartition = "{partition}"\ncpus_per_task = 1\n'
        + extra
    )


def fake_slurm_study(
    folder: Path,
    modes: dict[str, int],
    *,
    hosts: str | None = None,
    host_names: tuple[str, ...] = ("block-a",),
    sleep: float = 0.3,
    grace: float = 60,
    seeds: tuple[int, ...] = (1,),
) -> Path:
    """The fake trainer (an argv template) on Slurm host blocks."""
    folder.mkdir(parents=True)
    first = next(iter(modes))
    rows = ["label,condition_id,role,mode,sleep"]
    for cid, mode in modes.items():
        rows.append(f"{cid},{cid},{'reference' if cid == first else 'variant'},{mode},{sleep}")
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    (folder / "study.toml").write_text(
        f"""[study]
name = "slurmtest"
reference = "{first}"
matrix = "matrix.csv"
[runner]
command = {json.dumps(FAKE_COMMAND)}
device_batch_size = 16
grace_seconds = {grace}
{hosts or slurm_host("block-a", "blk-a")}
[stages.s1]
budget = "1s"
seeds = {list(seeds)}
hosts = {json.dumps(list(host_names))}
candidates = "all"
"""
    )
    return with_ledger(folder)


def jobs(study: Path) -> list[dict[str, Any]]:
    import sqlite3

    conn = sqlite3.connect(study / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
    conn.close()
    return rows


def wait_for(predicate: Any, timeout: float = 120.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout:.0f}s")


def starts(study: Path) -> Counter[str]:
    return Counter(e[1] for e in journal(study) if e[0] == "start")


def ends(study: Path) -> Counter[str]:
    return Counter(e[1] for e in journal(study) if e[0] == "end")


def scontrol(slurm: Any, job_id: str) -> dict[str, str]:
    out = slurm.run("scontrol", "-o", "show", "job", job_id).stdout
    return dict(t.split("=", 1) for t in out.split() if "=" in t)


# --------------------------------------------------------------------------- the tiny study
def test_a_two_block_stage_of_the_tiny_study_runs_through_slurm(
    tmp_path: Path, slurm: Any, sample_data: Path
) -> None:
    study = tmp_path / "tiny"
    study.mkdir()
    (study / "matrix.csv").write_text(
        "label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size\n"
        "a,c_a,reference,2,32,0.04,4096\nb,c_b,comparator,2,48,0.04,4096\n"
    )
    (study / "study.toml").write_text(
        '[study]\nname = "tiny"\nreference = "c_a"\nmatrix = "matrix.csv"\n'
        + TINY_RUNNER.format(data=sample_data)
        + slurm_host("block-a", "blk-a")
        # block-b packs its two runs into one job: one allocation, one warm worker.
        + slurm_host("block-b", "blk-b", "runs_per_job = 2\n")
        + '[stages.s1]\nbudget = "2s"\nseeds = [1]\nhosts = ["block-a", "block-b"]\n'
        'candidates = "all"\n'
    )
    with_ledger(study)
    proc = run_cli("run", study, "s1", "--allow-unfrozen", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = runs(study)
    assert {k: r["status"] for k, r in table.items()} == {
        f"{c}/1/{h}": "succeeded" for c in ("c_a", "c_b") for h in ("block-a", "block-b")
    }
    assert all(r["attempts"] == 1 and r["val_bpb"] > 0 for r in table.values())
    recorded = jobs(study)
    assert len(recorded) == 4 and all(j["ended"] == 1 for j in recorded)
    by_host: dict[str, set[str]] = {}
    for job in recorded:
        by_host.setdefault(job["host"], set()).add(job["job_id"])
        assert job["state"] == "COMPLETED" and job["executor"] == "slurm"
    # One array per block; block-b's two runs share one array task (runs_per_job = 2).
    assert len(by_host["block-a"]) == 2 and len(by_host["block-b"]) == 1
    arrays = {h: {j.split("_")[0] for j in ids} for h, ids in by_host.items()}
    assert all(len(a) == 1 for a in arrays.values()) and arrays["block-a"] != arrays["block-b"]
    for host, partition in (("block-a", "blk-a"), ("block-b", "blk-b")):
        job_id = sorted(by_host[host])[0]
        assert scontrol(slurm, job_id)["Partition"] == partition
        log = Path(next(j["log_path"] for j in recorded if j["job_id"] == job_id))
        assert log.is_file() and log.is_relative_to(study / "slurm")
    result = json.loads(proc.stdout)
    assert all(row["worker"].startswith("slurm:") for row in result["succeeded"])
    status = run_cli("status", study, "--json")
    assert status.returncode == 0, status.stderr
    shown = {r["run"]: r for r in json.loads(status.stdout)["jobs"]}
    assert shown["s1/c_a/seed1/block-a"]["job_id"] in by_host["block-a"]
    assert shown["s1/c_a/seed1/block-a"]["job_state"] == "COMPLETED"


# --------------------------------------------------------------------------- exactly once
def test_sigkill_of_the_driver_then_resume_runs_everything_exactly_once(
    tmp_path: Path, slurm: Any
) -> None:
    modes = {f"c{i}": SUMMARY for i in range(6)}
    hosts = slurm_host("block-a", "blk-a") + slurm_host("block-b", "blk-b")
    study = fake_slurm_study(
        tmp_path / "s", modes, hosts=hosts, host_names=("block-a", "block-b"), sleep=3.0
    )
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1", "--allow-unfrozen"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        # Killed once a run has ended and others are still queued or running in Slurm.
        wait_for(lambda: ends(study) and len(ends(study)) < 8, what="a first finished run")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
    submitted = {j["job_id"] for j in jobs(study)}
    assert len(jobs(study)) == 12  # every run's job id was on record before the kill
    assert slurm.queue()  # the jobs outlive their driver: nothing is lost with it

    proc = run_cli("run", study, "s1", "--allow-unfrozen", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["reattached"]  # followed, not resubmitted
    table = runs(study)
    assert len(table) == 12 and {r["status"] for r in table.values()} == {"succeeded"}
    assert all(r["attempts"] == 1 for r in table.values())
    assert starts(study) == ends(study) == Counter({k: 1 for k in table})  # exactly once
    assert {j["job_id"] for j in jobs(study)} == submitted  # not one job more
    assert [j for j in jobs(study) if not j["ended"]] == []


def test_jobs_a_lost_driver_never_recorded_are_cancelled_before_its_runs_are_put_back(
    tmp_path: Path, slurm: Any
) -> None:
    """The window between sbatch accepting an array and its ids reaching the ledger: a driver
    killed there leaves a job no ledger row leads to. The rerun must not run beside it."""
    study_dir = fake_slurm_study(tmp_path / "s", {"c0": SUMMARY, "c1": SUMMARY})
    script = (
        "#!/bin/bash\n#SBATCH --partition=blk-a\n#SBATCH --time=10\n"
        "#SBATCH --output=/dev/null\n#SBATCH --array=0-1\nsleep 300\n"
    )
    # As submitit submits: a script inside the stage's job folder (the orphan), and the same
    # job from elsewhere (another study's, never touched).
    ours = study_dir / "slurm" / "s1" / "block-a" / ".submission_file_lost.sh"
    theirs = tmp_path / "other" / "slurm" / "s1" / "block-a" / ".submission_file_other.sh"
    for path in (ours, theirs):
        path.parent.mkdir(parents=True)
        path.write_text(script)
    orphan = slurm.run("sbatch", "--parsable", str(ours)).stdout.strip()
    other = slurm.run("sbatch", "--parsable", str(theirs)).stdout.strip()
    # The driver died while writing the array's ids down: c1's task reached the ledger (it is
    # followed by the next `stagewise run`), c0's did not.
    lost, followed = RunKey("s1", "c0", 1, "block-a"), RunKey("s1", "c1", 1, "block-a")
    dead = f"{socket.gethostname()}:999999999:1"
    study = load_study(study_dir)
    with Ledger.open(study_dir) as ledger:
        ledger.ensure_runs([lost, followed])
        assert ledger.claim(lost, dead) and ledger.claim(followed, dead)
        ledger.record_job(followed, 1, "slurm", f"{orphan}_1")
        put_back, adopted = recover_stale(ledger, "me", study)
        still = ledger.run(followed)
    assert put_back == [str(lost)] and adopted == []
    assert still is not None and still.status == "running"  # left to its job
    queued = set(slurm.run("squeue", "-h", "-r", "-o", "%i").stdout.split())  # task by task
    assert f"{orphan}_0" not in queued  # the unrecorded task was cancelled before the rerun
    assert f"{orphan}_1" in queued  # the recorded one is not an orphan
    assert {f"{other}_0", f"{other}_1"} <= queued  # another folder's jobs are left alone


# --------------------------------------------------------------------------- faults
def test_scancel_of_one_job_is_reported_and_retried(tmp_path: Path, slurm: Any) -> None:
    study = fake_slurm_study(tmp_path / "s", {"long": OK, "short": OK}, sleep=30.0)
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1", "--retries", "1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        first = wait_for(
            lambda: next((j for j in jobs(study) if j["condition_id"] == "long"), None),
            what="the job of `long` on record",
        )
        wait_for(lambda: starts(study)["long/1/block-a"] == 1, what="`long` started")
        slurm.run("scancel", first["job_id"])
        out, err = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out + err
    events = run_cli("status", study, "--json")
    long_run = runs(study)["long/1/block-a"]
    assert long_run["status"] == "succeeded" and long_run["attempts"] == 2
    row = next(r for r in json.loads(out)["succeeded"] if r["run"] == "s1/long/seed1/block-a")
    assert row["attempt"] == 2  # the driver's retry policy, as for the other executors
    cancelled = next(j for j in jobs(study) if j["job_id"] == first["job_id"])
    assert cancelled["state"] == "CANCELLED" and cancelled["ended"] == 1
    failed = [
        e
        for e in (json.loads(r) for r in _event_payloads(study, "run.failed"))
        if "CANCELLED" in (e.get("cause") or "")
    ]
    assert failed and failed[0]["cause"].startswith("killed: the job was cancelled (scancel)")
    assert first["log_path"] in failed[0]["cause"]  # the job's log is named
    assert events.returncode == 0


def _event_payloads(study: Path, kind: str) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(study / "ledger.sqlite")
    rows = [r[0] for r in conn.execute("SELECT payload FROM events WHERE kind = ?", (kind,))]
    conn.close()
    return rows


def test_a_requeued_job_runs_its_run_again_and_records_it_once(tmp_path: Path, slurm: Any) -> None:
    study = fake_slurm_study(tmp_path / "s", {"pre": OK}, sleep=12.0)
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        job = wait_for(lambda: (jobs(study) or [None])[0], what="the job on record")
        wait_for(lambda: starts(study)["pre/1/block-a"] == 1, what="the run started")
        # A preemption as Slurm delivers it with preempt_send_user_signal: the job's --signal
        # (USR2) first. submitit calls the checkpoint hook and requeues the job itself.
        slurm.run("scancel", "--signal=USR2", job["job_id"])
        out, err = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out + err
    run = runs(study)["pre/1/block-a"]
    assert run["status"] == "succeeded" and run["attempts"] == 1
    assert starts(study)["pre/1/block-a"] == 2 and ends(study)["pre/1/block-a"] == 1
    assert int(scontrol(slurm, job["job_id"])["Restarts"]) >= 1
    assert "requeued" in out + err
    assert [j["job_id"] for j in jobs(study)] == [job["job_id"]]  # the same job, not a new one


def test_a_bad_partition_is_refused_at_submission_with_slurms_words(
    tmp_path: Path, slurm: Any
) -> None:
    study = fake_slurm_study(
        tmp_path / "s", {"a": OK}, hosts=slurm_host("block-a", "no-such-partition")
    )
    proc = run_cli("run", study, "s1")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "hosts.block-a" in line and "invalid partition" in line.lower(), line
    assert {r["status"] for r in runs(study).values()} <= {"pending"}
    assert jobs(study) == [] and slurm.queue() == []


def test_a_job_past_its_slurm_time_limit_ends_as_a_timeout(tmp_path: Path, slurm: Any) -> None:
    # A 2-minute limit: submitit's USR2 comes 90 s before it, finds the job out of time and
    # ends it; the run is recorded as a timeout naming the job, its state and its log.
    study = fake_slurm_study(
        tmp_path / "s",
        {"slow": HANG},
        hosts=slurm_host("block-a", "blk-a", "time_limit = 2\n"),
        grace=600,
    )
    proc = run_cli("run", study, "s1", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run = runs(study)["slow/1/block-a"]
    assert run["status"] == "failed" and run["cause"].startswith("timeout:"), run["cause"]
    job = jobs(study)[0]
    assert job["job_id"] in run["cause"] and job["log_path"] in run["cause"]


# --------------------------------------------------------------------------- visibility
def test_doctor_host_submits_one_smoke_job_and_reports_wait_node_and_device(
    tmp_path: Path, slurm: Any
) -> None:
    study = fake_slurm_study(
        tmp_path / "s", {"a": OK}, hosts=slurm_host("block-b", "blk-b"), host_names=("block-b",)
    )
    proc = run_cli("doctor", "--host", "block-b", "--study", study, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [c["status"] for c in report["checks"]] == ["PASS", "PASS", "PASS"]
    smoke = report["smoke"]
    assert smoke["node"] == slurm.node and smoke["study_visible"] is True
    assert smoke["queue_wait_seconds"] >= 0 and smoke["device"].startswith("cpu")
    assert scontrol(slurm, smoke["job_id"])["Partition"] == "blk-b"
    refused = run_cli("doctor", "--host", "nope", "--study", study)
    assert refused.returncode == 2 and "no host 'nope'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_long_queue_wait_is_reported_not_failed(tmp_path: Path, slurm: Any) -> None:
    # Another user's job holds every CPU of the node: ours waits (Resources) past the
    # configured 0.05 minutes, is reported once, and runs when the node frees up.
    cpus = os.cpu_count() or 1
    hog = slurm.run(
        "sbatch",
        "--parsable",
        "-p",
        "blk-a",
        "-c",
        str(cpus),
        "-o",
        str(tmp_path / "other-job.out"),
        "--wrap",
        "sleep 300",
    ).stdout.strip()
    wait_for(lambda: "RUNNING" in " ".join(slurm.queue()), what="the other job running")
    study = fake_slurm_study(
        tmp_path / "s",
        {"a": OK},
        hosts=slurm_host("block-a", "blk-a", "queue_wait_minutes = 0.05\n"),
    )
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        job = wait_for(lambda: (jobs(study) or [None])[0], what="our job on record")
        wait_for(lambda: jobs(study)[0]["state"] == "PENDING", what="our job pending")
        time.sleep(8)  # past the 3-second threshold, and a state refresh or two
        assert runs(study)["a/1/block-a"]["status"] == "running"  # waiting is not failing
        slurm.run("scancel", hog)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert f"job {job['job_id']} has waited" in out and "(Resources); still waiting" in out
    assert runs(study)["a/1/block-a"]["status"] == "succeeded"
