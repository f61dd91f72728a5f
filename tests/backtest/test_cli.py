"""`stagewise curves` and `stagewise backtest` end to end through the real CLI, in tmp_path."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.backtest.helpers import curve_study
from tests.conftest import run_cli

# final, early: val_bpb = final + early / budget (+ seed / 10000). "slow" ends best but starts
# worst; "quick" leads at 1 s and 2 s.
CONDITIONS = {"ref": (1.0, 1.0), "quick": (1.1, 0.2), "slow": (0.8, 1.2)}
GATES = """[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [{ rule = "best_k", k = 1 }]
[stages.s2]
budget = "4s"
seeds = [2]
hosts = ["block-a"]
candidates = { gate = "g1" }
"""


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_curves_runs_the_factorial_in_the_ledger_and_resumes(tmp_path: Path) -> None:
    study = curve_study(tmp_path / "s", CONDITIONS)
    out = tmp_path / "curves.csv"
    args = [
        "curves",
        study,
        "--budgets",
        "1s,2s,4s",
        "--seeds",
        "1,2",
        "--workers",
        "2",
        "--out",
        out,
    ]
    run_cli(*args, "--json", check=True)
    rows = read_rows(out)
    assert len(rows) == 3 * 3 * 2
    for row in rows:
        final, early = CONDITIONS[row["condition_id"]]
        expected = final + early / float(row["budget_seconds"]) + int(row["seed"]) / 10000
        assert float(row["val_bpb"]) == pytest.approx(expected, abs=1e-6)
        assert row["host"] == "block-a" and row["role"] in ("reference", "variant")
    conn = sqlite3.connect(study / "ledger.sqlite")
    stages = dict(conn.execute("SELECT stage, count(*) FROM runs GROUP BY stage").fetchall())
    conn.close()
    assert stages == {"curves-1s": 6, "curves-2s": 6, "curves-4s": 6}
    journal = (study / "journal.txt").read_text().splitlines()
    assert len(journal) == 18
    # A second invocation (as after a kill) runs nothing twice, adds a level, writes the table.
    proc = run_cli(*args[:3], "1s,2s,4s,8s", *args[4:], "--json", check=True)
    summary = json.loads(proc.stdout)
    assert [s["already_finished"] for s in summary["stages"]] == [6, 6, 6, 0]
    assert len((study / "journal.txt").read_text().splitlines()) == 24
    assert summary["rows"] == 24 and summary["budgets_seconds"] == [1.0, 2.0, 4.0, 8.0]
    # --from-study writes the same cells from the ledger (plus nothing else: s1 never ran).
    again = tmp_path / "again.csv"
    run_cli("curves", "--from-study", study, "--out", again, check=True)
    assert len(read_rows(again)) == 24


def test_backtest_json_contract_and_determinism(tmp_path: Path) -> None:
    table = tmp_path / "syn.csv"
    run_cli("curves", "--synthetic", "--conditions", "6", "--budgets", "10s,30s,90s", "--seeds", "1,2,3",
            "--hosts", "a,b", "--flip", "0.7", "--out", table, check=True)  # fmt: skip
    args = [
        "backtest",
        table,
        "--policies",
        "final_only,top_k:k=2,sh:eta=2,hyperband,asha",
        "--replays",
        "50",
        "--seed",
        "3",
        "--json",
    ]
    first = json.loads(run_cli(*args, check=True).stdout)
    second = json.loads(run_cli(*args, "--out", tmp_path / "bt", check=True).stdout)
    assert first == second
    names = {p.name for p in (tmp_path / "bt").iterdir()}
    assert names == {
        "backtest.json",
        "policies.csv",
        "pareto.csv",
        "pareto.png",
        "decision_accuracy.png",
    }
    assert json.loads((tmp_path / "bt" / "backtest.json").read_text()) == first
    pareto = read_rows(tmp_path / "bt" / "pareto.csv")
    assert {r["label"] for r in pareto} == {
        "final_only",
        "top_k:k=2",
        "sh:eta=2",
        "hyperband:eta=3",
        "asha:eta=3",
    }
    assert set(first["truth"]) >= {"condition_id", "final_budget_seconds", "mean_val_bpb"}
    assert first["replays"] == 50 and first["truth"]["final_budget_seconds"] == 90
    assert [p["policy"] for p in first["policies"]] == [
        "final_only",
        "top_k",
        "sh",
        "hyperband",
        "asha",
    ]
    for p in first["policies"]:
        for key in (
            "policy",
            "params",
            "p_retain",
            "p_select",
            "mean_regret",
            "gpu_hours",
            "cost_vs_final_only",
        ):
            assert key in p
        assert 0 <= p["p_retain_interval"][0] <= p["p_retain"] <= p["p_retain_interval"][1] <= 1
    fo = first["policies"][0]
    assert fo["p_retain"] == 1 and fo["gpu_hours"] == pytest.approx(6 * 6 * 90 / 3600)
    assert first["policies"][2]["params"] == {"eta": 2}


def test_backtest_prints_a_table_on_the_terminal(tmp_path: Path) -> None:
    from stagewise.backtest.synthetic import SyntheticSpec, synthetic_rows
    from stagewise.backtest.table import write_curves
    from stagewise.cli.app import app

    table = write_curves(
        synthetic_rows(SyntheticSpec(conditions=4, budgets=(1.0, 2.0))), tmp_path / "t.csv"
    )
    result = CliRunner().invoke(
        app, ["backtest", str(table), "--policies", "final_only,sh", "--replays", "20"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("truth: ")) :]
    assert lines[0].startswith("truth: syn") and "cost model restart" in lines[0]
    assert lines[1].split() == [
        "policy",
        "p_retain",
        "95%",
        "p_select",
        "regret",
        "GPU-hours",
        "x",
        "final",
        "unknown",
    ]
    assert lines[2].split()[:2] == ["final_only", "1.000"] and lines[3].startswith("sh:eta=3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backtest", "{dir}/bad.csv"], "bad.csv row 3: val_bpb must be a number, but got 'oops'"),
        (
            ["backtest", "{dir}/good.csv", "--policies", "sh:eta=0"],
            "sh:eta must be >= 2, but got eta=0",
        ),
        (["backtest", "{dir}/good.csv", "--policies", "study"], "study needs --study DIR"),
        (["backtest", "{dir}/good.csv", "--cells-per-level", "1,9"], "expected 1..1, but got 9"),
        (["curves", "--out", "x.csv"], "give exactly one source"),
        (
            ["curves", "--synthetic", "--budgets", "1s,zz", "--out", "x.csv"],
            "--budgets: expected seconds",
        ),
    ],
)
def test_user_errors_print_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    header = "condition_id,budget_seconds,seed,host,val_bpb\n"
    (tmp_path / "bad.csv").write_text(header + "a,10,1,h,1.0\nb,10,1,h,oops\n")
    (tmp_path / "good.csv").write_text(
        header + "a,10,1,h,1.0\nb,10,1,h,1.1\na,20,1,h,0.9\nb,20,1,h,0.8\n"
    )
    proc = run_cli(*[a.replace("{dir}", str(tmp_path)) for a in args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_study_policy_replays_the_study_gates_and_stores_the_result_in_the_study(
    tmp_path: Path,
) -> None:
    study = curve_study(tmp_path / "s", CONDITIONS, gates=GATES)
    out = tmp_path / "curves.csv"
    run_cli("curves", study, "--budgets", "1s,2s,4s", "--seeds", "1,2", "--out", out, check=True)
    proc = run_cli(
        "backtest",
        out,
        "--study",
        study,
        "--policies",
        "study,final_only",
        "--replays",
        "10",
        "--json",
        check=True,
    )
    result = json.loads(proc.stdout)
    assert result["truth"]["condition_id"] == "slow"
    study_row = result["policies"][0]
    # s1 (1 s) screens all three, g1 keeps the best: "quick" (1.3 against ref 2.0 and slow
    # 2.0), which alone runs at 4 s: never the truth. One cell at 1 s (one host), both seeds
    # at the final level: 3 x 1 s + 1 x 2 x 4 s.
    assert study_row["p_retain"] == 0 and study_row["chosen"] == {"quick": 1.0}
    assert study_row["gpu_hours"] == pytest.approx((3 * 1 + 1 * 2 * 4) / 3600)
    assert "stage s1 (1s) -> level 1s" in study_row["notes"]
    stored = json.loads((study / "backtest" / "backtest.json").read_text())
    assert stored["policies"][1]["policy"] == "final_only"


def test_optuna_policies_run_natively_when_optuna_is_absent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from stagewise.cli.app import app

    table = tmp_path / "t.csv"
    table.write_text(
        "condition_id,budget_seconds,seed,host,val_bpb\na,1,1,h,1\nb,1,1,h,2\na,2,1,h,1\nb,2,1,h,0.5\n"
    )
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now fails
    result = CliRunner().invoke(
        app,
        ["backtest", str(table), "--policies", "final_only,optuna-sh", "--replays", "3", "--json"],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [p["label"] for p in data["policies"]] == ["final_only", "optuna-sh:eta=3"]
    assert data["skipped"] == []


def test_curves_resumes_after_a_sigkill_without_repeating_finished_runs(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    study = curve_study(tmp_path / "s", CONDITIONS, sleep=0.6, workers=1)
    out = tmp_path / "curves.csv"
    args = ["curves", str(study), "--budgets", "1s,2s", "--seeds", "1,2", "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "stagewise", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = study / "journal.txt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait (no timing assertion) until some runs finished
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    conn = sqlite3.connect(study / "ledger.sqlite")
    before = dict(conn.execute("SELECT stage || condition_id || seed, status FROM runs").fetchall())
    conn.close()
    finished = {k for k, v in before.items() if v == "succeeded"}
    assert finished and len(finished) < 12
    run_cli(*args, check=True)
    assert len(read_rows(out)) == 12
    # Only the runs not finished at the kill were started again: at most one was in flight.
    starts = len(journal.read_text().splitlines())
    assert 12 <= starts <= 12 + 1
