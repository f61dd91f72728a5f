"""`stagewise run DIR`: the whole study in one command, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from stagewise.ledger import Ledger
from tests.conftest import run_cli
from tests.walk.conftest import journal, run_rows, walk_study

ALL_RUNS = 6 + 4 + 2  # s1: 3 conditions x 2 hosts; s2: 2 promoted x 2 hosts; s3: 1 x 2


def test_refuses_unfrozen_then_walks_everything_with_freeze(tmp_path: Path) -> None:
    folder = walk_study(tmp_path / "s")
    refused = run_cli("run", folder)
    assert refused.returncode == 2, refused.stderr
    assert "gate g1 is not frozen" in refused.stderr
    assert f"stagewise freeze {folder} g1" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert journal(folder, "start") == [] and not (folder / "runs").exists()

    done = run_cli("run", folder, "--freeze")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = run_rows(folder)
    assert len(rows) == ALL_RUNS and {r["status"] for r in rows} == {"succeeded"}
    assert Counter(journal(folder, "end")) == Counter({k: 1 for k in journal(folder, "end")})
    assert len(journal(folder, "end")) == ALL_RUNS
    # g1 promoted c_c and c_b, g2 promoted c_c: the third stage trained exactly that.
    assert {r["condition_id"] for r in rows if r["stage"] == "s3"} == {"c_c"}
    with Ledger.open(folder) as ledger:
        for gate, stage in (("g1", "s1"), ("g2", "s2")):
            record = ledger.current_freeze(gate)
            assert record is not None
            assert record.reason == f"frozen by stagewise run before stage {stage}"
            assert not record.post_hoc
            decision = ledger.active_decision(gate)
            assert decision is not None and decision.kind == "computed"
        promoted = ledger.active_decision("g2")
        assert promoted is not None and promoted.promoted == ("c_c",)
    assert "gate g2 (promote" in done.stdout and "every stage run" in done.stdout

    again = run_cli("run", folder, "--freeze", "--json")
    assert again.returncode == 0, again.stderr
    result = json.loads(again.stdout)
    assert result["outcome"] == "complete" and result["gates_applied"] == []
    assert len(journal(folder, "start")) == ALL_RUNS  # nothing ran twice


def test_dry_run_prints_the_walk_and_changes_nothing(tmp_path: Path) -> None:
    folder = walk_study(tmp_path / "s")
    proc = run_cli("run", folder, "--dry-run", "--freeze")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "gate g1 would be frozen: frozen by stagewise run before stage s1"
    assert any(
        line.startswith("stage s2 (2s") and "promoted by g1 (2); 4 runs" in line for line in lines
    )
    assert "gate g2 would be applied" in lines
    assert sum(line.startswith("    s1/") for line in lines) == 6
    with Ledger.open(folder) as ledger:
        assert ledger.runs() == [] and ledger.freezes() == []
    assert journal(folder, "start") == []


def test_through_stops_after_the_stage(tmp_path: Path) -> None:
    folder = walk_study(tmp_path / "s")
    proc = run_cli("run", folder, "--freeze", "--through", "s1")
    assert proc.returncode == 0, proc.stderr
    assert {r["stage"] for r in run_rows(folder)} == {"s1"}
    assert "stopped after stage s1" in proc.stdout
    bad = run_cli("run", folder, "--through", "s9")
    assert bad.returncode == 2 and "no such stage in" in bad.stderr


def test_manual_gate_waits_for_decide(tmp_path: Path) -> None:
    folder = walk_study(tmp_path / "s", g2_extra='decide = "manual"')
    first = run_cli("run", folder, "--freeze")
    assert first.returncode == 0, first.stderr
    assert "analysis of gate g2" in first.stdout
    assert "waiting for a decision on gate g2" in first.stdout
    assert f"stagewise decide {folder} g2" in first.stdout
    assert {r["stage"] for r in run_rows(folder)} == {"s1", "s2"}
    # Nothing changes until a human decides.
    still = run_cli("run", folder, "--freeze")
    assert still.returncode == 0 and "waiting for a decision on gate g2" in still.stdout
    run_cli("decide", folder, "g2", "--promote", "c_b", "--reason", "reviewed", check=True)
    last = run_cli("run", folder, "--freeze")
    assert last.returncode == 0, last.stderr
    assert {r["condition_id"] for r in run_rows(folder) if r["stage"] == "s3"} == {"c_b"}
    assert len(journal(folder, "end")) == ALL_RUNS


def test_external_host_waits_for_import(tmp_path: Path) -> None:
    folder = walk_study(tmp_path / "s", s1_hosts=("block-a", "remote"), external=True)
    first = run_cli("run", folder, "--freeze")
    assert first.returncode == 0, first.stderr
    assert "waiting for 3 runs of stage s1 from host remote" in first.stdout
    assert "stagewise import" in first.stdout
    assert {r["stage"] for r in run_rows(folder)} == {"s1"}
    results = tmp_path / "remote.csv"
    results.write_text(
        "stage,condition_id,seed,host,val_bpb\n"
        + "".join(f"s1,{c},1,remote,{v}\n" for c, v in (("c_a", 2.0), ("c_b", 1.9), ("c_c", 1.8)))
    )
    run_cli("import", folder, results, check=True)
    last = run_cli("run", folder, "--freeze")
    assert last.returncode == 0, last.stderr
    assert len([r for r in run_rows(folder) if r["status"] == "succeeded"]) == ALL_RUNS


def test_failed_run_exits_1(tmp_path: Path) -> None:
    folder = walk_study(tmp_path / "s")
    matrix = folder / "matrix.csv"
    matrix.write_text(matrix.read_text().replace(",reference,2.0,", ",reference,-1,"))
    proc = run_cli("run", folder, "--freeze")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stage s1: 2 runs failed" in proc.stdout
    assert {r["stage"] for r in run_rows(folder)} == {"s1"}


def test_sigkill_in_the_second_stage_then_resume_runs_each_once(tmp_path: Path) -> None:
    # Long enough second-stage runs that the kill lands while they run.
    folder = walk_study(tmp_path / "s", sleeps={"c_b": 3.0, "c_c": 3.0})
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    log = (tmp_path / "driver.log").open("w")
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(folder), "--freeze"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        for _ in range(1200):  # up to 120 s on a slow machine; the loop ends at the first s2 start
            if any(k.startswith("s2/") for k in journal(folder, "start")):
                break
            assert driver.poll() is None, (tmp_path / "driver.log").read_text()
            time.sleep(0.1)
        else:
            raise AssertionError("the second stage never started")
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(timeout=60)
        log.close()
    assert driver.returncode == -signal.SIGKILL
    assert not all(r["status"] == "succeeded" for r in run_rows(folder) if r["stage"] == "s2")

    resumed = run_cli("run", folder, "--freeze")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    rows = run_rows(folder)
    assert len(rows) == ALL_RUNS and {r["status"] for r in rows} == {"succeeded"}
    ended = journal(folder, "end")
    assert len(ended) == ALL_RUNS and len(set(ended)) == ALL_RUNS  # every run finished once
    with Ledger.open(folder) as ledger:
        assert len(ledger.freezes()) == 2  # the resumed walk did not refreeze
        assert len(ledger.decisions()) == 2
