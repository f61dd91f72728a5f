"""`stagewise run` end to end through the real CLI, with a fake trainer behind an argv template."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.executors.conftest import events, fake_study, journal, run_cli, runs

OK, NAN, CRASH, HANG, OOM, FLAKY, SUMMARY = range(7)


def test_template_runs_record_every_result_once(tmp_path: Path) -> None:
    study = fake_study(
        tmp_path / "s", {"c_a": OK, "c_b": SUMMARY}, seeds=(1, 2), hosts=("block-a", "block-b")
    )
    proc = run_cli("run", study, "s1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["succeeded"]) == 8 and result["failed"] == []
    table = runs(study)
    assert len(table) == 8 and {r["status"] for r in table.values()} == {"succeeded"}
    assert table["c_a/2/block-b"]["val_bpb"] == pytest.approx(2.0 + 0.02 + 0.016)
    assert table["c_b/1/block-a"]["checkpoint_sha256"] == "0" * 64
    log = study / "runs/s1/c_a/seed1-block-a/train.log"
    assert "val_bpb:" in log.read_text() and "progress: step=3" in log.read_text()
    assert sum(1 for e in journal(study) if e[0] == "start") == 8
    # A second run finds nothing to do and records nothing.
    before = len(events(study, "run.succeeded"))
    again = run_cli("run", study, "s1")
    assert again.returncode == 0 and "8/8 succeeded" in again.stdout
    assert len(events(study, "run.succeeded")) == before
    assert sum(1 for e in journal(study) if e[0] == "start") == 8


def test_failures_are_recorded_with_cause_and_others_go_on(tmp_path: Path) -> None:
    study = fake_study(
        tmp_path / "s", {"ok": OK, "nan": NAN, "crash": CRASH, "hang": HANG}, workers=2
    )
    proc = run_cli("run", study, "s1", "--retries", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    table = runs(study)
    assert table["ok/1/block-a"]["status"] == "succeeded"
    nan = table["nan/1/block-a"]
    assert nan["status"] == "failed" and nan["cause"].startswith("diverged")
    assert nan["attempts"] == 1  # NaN is never retried
    crash = table["crash/1/block-a"]
    assert crash["status"] == "failed" and "exit code 1" in crash["cause"]
    assert "something broke" in crash["log_tail"] and crash["attempts"] == 3
    hang = table["hang/1/block-a"]
    assert hang["status"] == "failed" and hang["cause"].startswith("timeout")
    assert hang["val_bpb"] is None and nan["val_bpb"] is None
    assert "[4/4]" in proc.stdout or "4/4" in proc.stdout


def test_transient_failure_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"flaky": FLAKY, "ok": OK})
    assert run_cli("run", study, "s1").returncode == 1  # no retries: failed, recorded
    assert runs(study)["flaky/1/block-a"]["status"] == "failed"
    # A failed run is finished: not rerun unless asked.
    assert run_cli("run", study, "s1").returncode == 1
    assert runs(study)["flaky/1/block-a"]["attempts"] == 1
    (study / "runs/s1/flaky/seed1-block-a/flaky.marker").unlink()
    proc = run_cli("run", study, "s1", "--retries", "1", "--retry-failed")
    assert proc.returncode == 0, proc.stdout
    row = runs(study)["flaky/1/block-a"]
    assert row["status"] == "succeeded" and row["attempts"] == 3
    assert "retrying" in proc.stdout
    logs = sorted(p.name for p in (study / "runs/s1/flaky/seed1-block-a").glob("*.log"))
    assert logs == ["train.attempt1.log", "train.attempt2.log", "train.log"]


def test_oom_is_retried_with_half_the_device_batch(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"big": OOM})
    proc = run_cli("run", study, "s1", "--retries", "3")
    assert proc.returncode == 0, proc.stdout
    row = runs(study)["big/1/block-a"]
    assert row["status"] == "succeeded" and row["attempts"] == 3  # 16 -> 8 -> 4
    assert "device_batch_size 4" in proc.stdout
    assert json.loads(row["summary_json"])["val_bpb"] == pytest.approx(2.014)


def test_unfrozen_stage_is_refused_unless_allowed(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"c_a": OK}, gate=True)
    proc = run_cli("run", study, "s1")
    assert proc.returncode == 2
    assert "g1" in proc.stderr and "freeze" in proc.stderr and "Traceback" not in proc.stderr
    assert not journal(study)
    proc = run_cli("run", study, "s1", "--allow-unfrozen", "--reason", "smoke test")
    assert proc.returncode == 0, proc.stderr
    (event,) = events(study, "run.allow_unfrozen")
    assert json.loads(event["payload"])["reason"] == "smoke test"


def test_frozen_stage_runs(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"c_a": OK}, gate=True)
    run_cli("freeze", study, "g1", check=True)
    assert run_cli("run", study, "s1").returncode == 0
    assert not events(study, "run.allow_unfrozen")


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"c_a": OK}, gate=True)
    proc = run_cli("run", study, "s1", "--dry-run")
    assert proc.returncode == 0 and "fake_trainer.py" in proc.stdout
    assert "would refuse" in proc.stdout
    assert not journal(study) and not (study / "runs").exists()


def test_dry_run_shows_what_retry_failed_would_rerun(tmp_path: Path) -> None:
    """One queue builder: the dry run lists exactly the runs a real run then starts."""
    study = fake_study(tmp_path / "s", {"ok": OK, "crash": CRASH}, seeds=(1, 2))
    assert run_cli("run", study, "s1").returncode == 1
    (study / "journal.txt").unlink()

    def actions(*extra: str) -> dict[str, tuple[str, str, int]]:
        proc = run_cli("run", study, "s1", "--dry-run", "--json", *extra)
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)["dry_run"]
        return {r["run"]: (r["status"], r["action"], r["attempt"]) for r in rows}

    plain = actions()
    assert plain == {
        "s1/ok/seed1/block-a": ("succeeded", "skip", 2),
        "s1/ok/seed2/block-a": ("succeeded", "skip", 2),
        "s1/crash/seed1/block-a": ("failed", "skip", 2),
        "s1/crash/seed2/block-a": ("failed", "skip", 2),
    }
    retry = actions("--retry-failed")
    assert {run for run, (_s, action, _a) in retry.items() if action == "run"} == {
        "s1/crash/seed1/block-a",
        "s1/crash/seed2/block-a",
    }
    text = run_cli("run", study, "s1", "--dry-run", "--retry-failed").stdout
    assert text.count("fake_trainer.py") == 2  # an argv line under each run it would start
    assert not journal(study)  # the dry runs started nothing
    assert run_cli("run", study, "s1", "--retry-failed").returncode == 1
    started = sorted(e[1] for e in journal(study) if e[0] == "start")
    assert started == ["crash/1/block-a", "crash/2/block-a"]


def _spawn(study: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def _statuses(study: Path) -> list[str]:
    try:
        return [r["status"] for r in runs(study).values()]
    except Exception:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigint_stops_children_and_marks_them_interrupted(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"a": HANG, "b": HANG, "c": OK}, workers=2, grace=120)
    driver = _spawn(study)
    _wait_for(lambda: _statuses(study).count("running") == 2 and len(journal(study)) == 2)
    pids = [int(e[2]) for e in journal(study)]
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=30)
    assert driver.returncode == 130, out
    assert not any(_alive(p) for p in pids)
    statuses = {k: r["status"] for k, r in runs(study).items()}
    assert statuses == {
        "a/1/block-a": "interrupted",
        "b/1/block-a": "interrupted",
        "c/1/block-a": "pending",
    }


def test_a_second_driver_is_refused_while_one_is_live(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"a": HANG}, grace=120)
    driver = _spawn(study)
    try:
        _wait_for(lambda: "running" in _statuses(study))
        proc = run_cli("run", study, "s1", "--no-wait")
        assert proc.returncode == 2 and "another `stagewise run` is active" in proc.stderr
    finally:
        driver.send_signal(signal.SIGTERM)
        driver.communicate(timeout=30)
    assert driver.returncode == 130


def test_a_second_driver_waits_for_the_first_by_default(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"a": OK, "b": OK}, sleep=5, grace=60)
    first = _spawn(study)
    try:
        _wait_for(lambda: "running" in _statuses(study))
        second = run_cli("run", study, "s1")
    finally:
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert second.returncode == 0, second.stderr
    assert "waiting for it to end" in second.stderr and "2/2 succeeded" in second.stdout
    assert sum(1 for e in journal(study) if e[0] == "start") == 2


def test_external_runs_are_listed_as_awaiting_import(tmp_path: Path) -> None:
    study = fake_study(tmp_path / "s", {"a": OK}, hosts=("block-a", "block-b"))
    toml = (study / "study.toml").read_text()
    head, _, tail = toml.partition("[hosts.block-b]")
    tail = tail.replace('executor = "local"', 'executor = "external"', 1)
    (study / "study.toml").write_text(head + "[hosts.block-b]" + tail)
    proc = run_cli("run", study, "s1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["awaiting_import"] == ["s1/a/seed1/block-b"]
    assert [r["run"] for r in result["succeeded"]] == ["s1/a/seed1/block-a"]
    assert runs(study)["a/1/block-b"]["status"] == "pending"
