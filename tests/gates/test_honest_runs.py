"""Issue 28: runs that cannot mean much are flagged; looking at a gate does not change the record.

Items 1 (`too_short`, freeze warning), 2 (time split, over_budget / slow_eval, the budget's
split), 3 (one timeout cause everywhere, the grace setting named, the deadline from measured
runs) and 5 (a decision once per change of outcome, `gate --dry-run` writes nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from stagewise.analysis.run_checks import check_run, time_split
from stagewise.executors.base import RunTask
from stagewise.executors.command import grace_seconds, measured_overhead
from stagewise.executors.process import classify
from stagewise.gates.throughput import short_budgets
from stagewise.ledger import Ledger, RunKey
from stagewise.study import load_study
from tests.conftest import run_cli, write_study


@dataclass(frozen=True)
class _Run:
    stage: str = "s1"
    condition_id: str = "c_a"
    seed: int = 1
    host: str = "block-a"
    status: str = "succeeded"
    training_seconds: float | None = 4.1
    total_seconds: float | None = 9.0
    num_steps: int | None = 50
    summary_json: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


def test_too_short_over_budget_and_slow_eval_are_flagged() -> None:
    ok = check_run(_Run(), budget_seconds=4.0, min_steps=20)
    assert ok.flags == ()
    short = check_run(_Run(num_steps=3), budget_seconds=4.0, min_steps=20)
    assert short.flags == ("too_short",) and "3 optimizer steps" in short.notes[0]
    assert check_run(_Run(num_steps=3), 4.0, min_steps=0).flags == ()  # 0 turns it off
    assert check_run(_Run(num_steps=None), 4.0, 20).flags == ()  # a trainer that did not say
    # 21.8 s of training on a 2 s budget (the run), and an evaluation longer than it.
    summary = json.dumps({"startup_seconds": 3.0, "eval_seconds": 30.0})
    bad = check_run(_Run(training_seconds=21.8, summary_json=summary, total_seconds=60.0), 2.0, 20)
    assert bad.flags == ("over_budget", "slow_eval")
    assert "21.8s on a 2s budget (10.9x)" in bad.notes[0]
    split = time_split(_Run(training_seconds=21.8, summary_json=summary, total_seconds=60.0))
    assert (split.startup, split.training, split.evaluation, split.total) == (3.0, 21.8, 30.0, 60.0)
    assert split.other == 60.0 - 3.0 - 21.8 - 30.0
    # 10% over is tolerated (the last step crosses the budget), more is not.
    assert check_run(_Run(training_seconds=4.4), 4.0, 20).flags == ()
    assert check_run(_Run(training_seconds=4.5), 4.0, 20).flags == ("over_budget",)


RESULTS = """stage,condition_id,seed,host,val_bpb,training_seconds,num_steps
s1,c_a,1,block-a,2.00,4.1,50
s1,c_a,1,block-b,2.01,4.2,50
s1,c_a,2,block-a,2.02,4.0,50
s1,c_a,2,block-b,2.03,4.1,50
s1,c_b,1,block-a,1.90,9.5,3
s1,c_b,1,block-b,1.91,4.1,3
s1,c_b,2,block-a,1.92,4.1,40
s1,c_b,2,block-b,1.93,4.1,40
"""


def _study_with_results(tmp_path: Path) -> Path:
    folder = write_study(tmp_path / "s")
    run_cli("freeze", folder, "g1", check=True)
    (tmp_path / "r.csv").write_text(RESULTS)
    run_cli("import", folder, tmp_path / "r.csv", check=True)
    return folder


def test_status_and_gate_flag_runs_that_cannot_mean_much(tmp_path: Path) -> None:
    folder = _study_with_results(tmp_path)
    status = json.loads(run_cli("status", folder, "--json", check=True).stdout)
    assert status["min_steps"] == 20
    flagged = {r["run"]: r["flags"] for r in status["flagged_runs"]}
    assert flagged == {
        "s1/c_b/seed1/block-a": ["too_short", "over_budget"],
        "s1/c_b/seed1/block-b": ["too_short"],
    }
    s1 = next(s for s in status["stages"] if s["stage"] == "s1")
    assert s1["flags"] == {"too_short": 2, "over_budget": 1, "slow_eval": 0}
    text = run_cli("status", folder, check=True).stdout
    assert "flagged: 2 runs" in text and "s1/c_b/seed1/block-a: too_short, over_budget" in text

    gate = json.loads(run_cli("gate", folder, "g1", "--json", check=True).stdout)
    assert gate["min_steps"] == 20
    assert [r["run"] for r in gate["flagged_runs"]] == list(flagged)
    assert gate["flagged_runs"][0]["notes"][0].startswith("trained 3 optimizer steps")
    # The keys the CLI printed before are all still there, in their order.
    assert list(gate)[:10] == [
        "gate", "kind", "frozen_sha256", "stages", "budget_seconds", "reference", "cells",
        "conditions", "promoted", "incomplete",
    ]  # fmt: skip

    # [runner] min_steps is a setting: 2 flags nothing as too short.
    toml = (
        (folder / "study.toml")
        .read_text()
        .replace("[hosts.block-a]", "[runner]\nmin_steps = 2\n\n[hosts.block-a]")
    )
    (folder / "study.toml").write_text(toml)
    status = json.loads(run_cli("status", folder, "--json", check=True).stdout)
    assert [r["flags"] for r in status["flagged_runs"]] == [["over_budget"]]


def test_gate_records_a_decision_once_per_outcome_and_dry_run_writes_nothing(
    tmp_path: Path,
) -> None:
    folder = _study_with_results(tmp_path)

    def decisions_and_events() -> tuple[int, int]:
        with Ledger.open(folder) as ledger:
            return len(ledger.decisions("g1")), len(ledger.events())

    before = decisions_and_events()
    dry = run_cli("gate", folder, "g1", "--dry-run", "--json", check=True)
    obj = json.loads(dry.stdout)
    assert obj["dry_run"] is True and obj["decision_recorded"] is False
    assert "decision" not in obj  # nothing in force matches it, nothing was recorded
    assert decisions_and_events() == before
    assert not (folder / "decisions").exists()

    first = json.loads(run_cli("gate", folder, "g1", "--json", check=True).stdout)
    assert first["decision_recorded"] is True
    after_first = decisions_and_events()
    assert after_first == (before[0] + 1, after_first[1]) and after_first[1] > before[1]
    for _ in range(2):  # looking again, with and without --json, appends nothing
        again = json.loads(run_cli("gate", folder, "g1", "--json", check=True).stdout)
        assert again["decision_recorded"] is False
        assert again["decision"] == first["decision"]
        assert "decision unchanged" in run_cli("gate", folder, "g1", check=True).stdout
    assert decisions_and_events() == after_first
    dry = json.loads(run_cli("gate", folder, "g1", "--dry-run", "--json", check=True).stdout)
    assert dry["decision"] == first["decision"] and decisions_and_events() == after_first

    # A new result changes the cells: that is a new decision, recorded once.
    (tmp_path / "more.csv").write_text(
        "stage,condition_id,seed,host,val_bpb\ns1,c_c,1,block-a,1.5\ns1,c_c,1,block-b,1.5\n"
        "s1,c_c,2,block-a,1.5\ns1,c_c,2,block-b,1.5\n"
    )
    run_cli("import", folder, tmp_path / "more.csv", check=True)
    third = json.loads(run_cli("gate", folder, "g1", "--json", check=True).stdout)
    assert third["decision_recorded"] is True and third["promoted"] != first["promoted"]
    assert decisions_and_events()[0] == after_first[0] + 1


def test_freeze_warns_when_a_budget_is_expected_to_train_too_few_steps(tmp_path: Path) -> None:
    folder = write_study(tmp_path / "s")
    # Measured: c_a trains 1 step per second; s1's 4 s budget gives ~4 steps of it.
    (tmp_path / "r.csv").write_text(
        "stage,condition_id,seed,host,val_bpb,training_seconds,num_steps\n"
        "s1,c_a,1,block-a,2.0,4.0,4\n"
    )
    run_cli("import", folder, tmp_path / "r.csv", check=True)
    out = json.loads(run_cli("freeze", folder, "g1", "--json", check=True).stdout)
    short = {(s["stage"], s["condition_id"]): s for s in out["short_budgets"]}
    assert short[("s1", "c_a")]["expected_steps"] == 4
    assert short[("s1", "c_a")]["source"] == "this condition's runs"
    # c_b and c_c have the same total batch: the study's median tokens/s applies to them.
    assert short[("s1", "c_b")]["source"] == "the study's median tokens/s"


def _doctor_json(folder: Path, seconds_per_step: float, total_batch_size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "doctor.json").write_text(
        json.dumps(
            {
                "seconds_per_step": seconds_per_step,
                "device": "cpu",
                "total_batch_size": total_batch_size,
                "sequence_len": 128,
                "device_batch_size": 16,
                "depth": 2,
                "aspect_ratio": 32,
                "measured_at": "2026-01-02T03:04:05+00:00",
            }
        )
    )


def test_freeze_without_measured_runs_estimates_from_doctors_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_study(tmp_path / "s")  # s1: a 4 s budget, 4096 tokens per step
    cache = tmp_path / "cache"
    monkeypatch.setenv("STAGEWISE_CACHE", str(cache))
    # Neither runs nor doctor: no estimate, no warning.
    first = json.loads(run_cli("freeze", folder, "g1", "--json", check=True).stdout)
    assert first["short_budgets"] == []
    # Doctor (user cache) trained 2048 tokens per step at 0.25 s: the study's 4096 tokens per
    # step take ~0.5 s, so s1's 4 s budget trains ~8 steps (< min_steps = 20).
    _doctor_json(cache, 0.25, 2048)
    folder = write_study(tmp_path / "s2")
    proc = run_cli("freeze", folder, "g1", check=True)
    assert "doctor's measurement" in proc.stdout and "rough" in proc.stdout
    folder = write_study(tmp_path / "s3")
    out = json.loads(run_cli("freeze", folder, "g1", "--json", check=True).stdout)
    short = {(s["stage"], s["condition_id"]): s for s in out["short_budgets"]}
    assert short[("s1", "c_a")]["expected_steps"] in (7, 8)
    source = short[("s1", "c_a")]["source"]
    assert "doctor's measurement" in source and str(cache / "doctor.json") in source
    assert "2026-01-02T03:04:05+00:00" in source and "rough" in source


def test_the_studys_doctor_json_comes_before_the_cache_and_runs_before_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_study(tmp_path / "s")
    monkeypatch.setenv("STAGEWISE_CACHE", str(tmp_path / "cache"))
    study = load_study(folder)
    _doctor_json(tmp_path / "cache", 4 / 5.5, 4096)  # the cache says ~5 steps in 4 s
    _doctor_json(folder, 4 / 3.5, 4096)  # the study's own file says ~3 steps
    with Ledger.open(study.root, create=True) as ledger:
        short = {s.condition_id: s for s in short_budgets(study, ledger, "g1")}
    assert short["c_a"].expected_steps == 3 and str(folder) in short["c_a"].source
    # A measured run of the study: doctor's measurement is not used any more.
    (tmp_path / "r.csv").write_text(
        "stage,condition_id,seed,host,val_bpb,training_seconds,num_steps\n"
        "s1,c_a,1,block-a,2.0,4.0,4\n"
    )
    run_cli("import", folder, tmp_path / "r.csv", check=True)
    with Ledger.open(study.root) as ledger:
        sources = {s.source for s in short_budgets(study, ledger, "g1")}
    assert sources and not any("doctor" in s for s in sources)


def test_timeout_cause_is_the_same_everywhere_and_names_the_setting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    task = RunTask(
        RunKey("s1", "c_a", 1, "block-a"), ("x",), {}, str(tmp_path), str(out),
        str(tmp_path / "train.log"), 60.0, 240.0,
    )  # fmt: skip
    # The runner hears the kill's SIGTERM as an interrupt and writes that into its summary.
    (out / "summary.json").write_text(json.dumps({"status": "failed", "cause": "interrupted"}))
    outcome = classify(task, -15, "", timed_out=True)
    assert outcome.failure == "timeout"
    assert outcome.cause is not None and outcome.cause.startswith("timeout: still running after")
    assert "budget 60s + grace 180s" in outcome.cause
    assert "[runner] grace_seconds" in outcome.cause
    written = json.loads((out / "summary.json").read_text())
    assert written["cause"] == outcome.cause and outcome.summary["cause"] == outcome.cause


def test_kill_deadline_comes_from_the_studys_measured_runs(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path / "s"))
    # Nothing measured yet: max(60 s, half the budget) + 120 s of start-up allowance.
    assert grace_seconds(study, 60.0) == 180.0
    runs = [
        _Run(started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:00:34Z"),  # 30 s over
        _Run(started_at="2026-01-01T00:01:00Z", finished_at="2026-01-01T00:01:10Z"),
        _Run(status="failed", started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T01:00Z"),
    ]
    over = measured_overhead(study, runs)
    assert over == 30.0
    assert grace_seconds(study, 4.0, over) == 90.0  # 3 x the measured 30 s
    assert grace_seconds(study, 4.0, 1.0) == 60.0  # never under a minute
    assert measured_overhead(study, [_Run()]) is None  # imported: no start time
