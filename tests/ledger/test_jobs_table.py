"""Schema v4: the jobs table (cluster jobs carrying runs), its upgrade path and re-attaching."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from stagewise.ledger import Ledger, RunKey
from stagewise.ledger.schema import SCHEMA_VERSION

KEY = RunKey("s1", "c_a", 1, "block-a")


def _v3_ledger(folder: Path) -> str:
    """A v3 ledger with a finished and a running run, as v3 code left it: the same tables and
    chain, without the jobs table. Returns its chain head."""
    with Ledger.open(folder) as ledger:
        ledger.ensure_runs([KEY, RunKey("s1", "c_b", 1, "block-a")])
        ledger.claim(KEY, "driver-1")
        ledger.finish(KEY, "succeeded", summary={"val_bpb": 1.5}, owner="driver-1")
        ledger.claim(RunKey("s1", "c_b", 1, "block-a"), "driver-1")
        head = ledger.head
    conn = sqlite3.connect(folder / "ledger.sqlite")
    conn.execute("DROP TABLE jobs")
    # and what v5 added (the runs' recipes), so the file reads as v3 wrote it
    conn.execute("DROP TABLE recipes")
    conn.execute("ALTER TABLE runs DROP COLUMN recipe_sha256")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    return head


def test_a_v3_ledger_upgrades_to_v4_keeping_its_runs_and_chain(tmp_path: Path) -> None:
    head = _v3_ledger(tmp_path)
    with Ledger.open(tmp_path, create=False) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION >= 4
        assert ledger.integrity_problems() == []
        assert [e.kind for e in ledger.events()][-1] == "ledger.migrate"
        assert ledger.events()[-2].hash == head  # the old chain continues unchanged
        run = ledger.run(KEY)
        assert run is not None and run.val_bpb == 1.5
        assert ledger.jobs() == []
        ledger.record_job(KEY, 1, "slurm", "77_0", folder="/f", log_path="/f/77_0_0_log.out")
        assert ledger.open_job(KEY, 1) is not None
    assert (tmp_path / "ledger.sqlite.v3.bak").is_file()


def test_jobs_are_recorded_on_the_chain_and_updated_off_it(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        ledger.ensure_runs([KEY])
        ledger.claim(KEY, "driver-1")
        ledger.record_job(KEY, 1, "slurm", "12_3", folder="/study/slurm", log_path="/x.log")
        events = len(ledger.events())
        assert ledger.events("run.submitted")[-1].payload == {
            "attempt": 1,
            "executor": "slurm",
            "job_id": "12_3",
        }
        assert ledger.update_job(KEY, 1, "12_3", state="PENDING", reason="Priority")
        assert ledger.update_job(KEY, 1, "12_3", node="n1")  # no new state: the reason stays
        job = ledger.open_job(KEY, 1)
        assert job is not None
        assert (job.state, job.reason, job.node) == ("PENDING", "Priority", "n1")
        assert ledger.update_job(KEY, 1, "12_3", state="RUNNING")  # a new state: a new reason
        job = ledger.open_job(KEY, 1)
        assert job is not None and (job.state, job.reason, job.node) == ("RUNNING", None, "n1")
        assert len(ledger.events()) == events  # state updates are not results
        ledger.update_job(KEY, 1, "12_3", state="COMPLETED", ended=True)
        assert ledger.open_job(KEY, 1) is None
        assert ledger.latest_jobs()[KEY].state == "COMPLETED"
        assert not ledger.update_job(KEY, 2, "12_3", state="RUNNING")  # no such attempt
        assert ledger.integrity_problems() == []


def test_reattach_passes_a_running_run_to_the_new_driver_only(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        ledger.ensure_runs([KEY])
        ledger.claim(KEY, "old")
        assert not ledger.reattach(KEY, "someone-else", "new")
        assert ledger.reattach(KEY, "old", "new")
        run = ledger.run(KEY)
        assert run is not None and (run.owner, run.status, run.attempts) == ("new", "running", 1)
        ledger.finish(KEY, "succeeded", summary={"val_bpb": 1.0}, owner="old")  # too late
        assert ledger.run(KEY).status == "running"  # type: ignore[union-attr]
        ledger.finish(KEY, "succeeded", summary={"val_bpb": 1.0}, owner="new")
        assert ledger.run(KEY).status == "succeeded"  # type: ignore[union-attr]
        assert ledger.integrity_problems() == []


def test_jobs_of_runs_no_longer_running_are_closed_on_the_next_start(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        other = RunKey("s1", "c_b", 1, "block-a")
        ledger.ensure_runs([KEY, other])
        for key, job_id in ((KEY, "1_0"), (other, "1_1")):
            ledger.claim(key, "old")
            ledger.record_job(key, 1, "slurm", job_id)
        # The old driver recorded KEY's outcome and died before closing its job.
        ledger.finish(KEY, "succeeded", summary={"val_bpb": 1.0}, owner="old")
        assert ledger.close_settled_jobs() == 1
        assert ledger.open_job(KEY, 1) is None
        assert ledger.open_job(other, 1) is not None  # still running: still followed
