"""The walk's pieces in-process: the overall ETA, the Python API's refusals and its dry run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from stagewise import load_study, run_study
from stagewise.errors import ExecutorError, FrozenRuleMismatch
from stagewise.executors.base import RunOutcome
from stagewise.executors.stage import StageState
from stagewise.ledger import Ledger, RunKey
from stagewise.plan import build_plan
from stagewise.walk import WalkReporter, dry_run_lines
from tests.walk.conftest import walk_study


def test_overall_eta_counts_later_stages_at_the_observed_pace(tmp_path: Path) -> None:
    study = load_study(walk_study(tmp_path / "s"))
    plan = build_plan(study)
    view = WalkReporter()
    view.enter(study, 1, [plan.stage("s2"), plan.stage("s3")])
    state = StageState("s1", total=6, pending=6, slots=2)
    view.begin(state)
    # Nothing measured: s1 is 6 runs x 1 s over 2 slots; s2 is 2 (g1's best_k) x 2 hosts x 2 s,
    # s3 is 1 x 2 hosts x 3 s, each over 2 slots.
    assert view.stage_eta() == 3.0
    assert view.overall_eta() == 3.0 + 4.0 + 3.0
    # A run trained its 1 s budget and took 5 s in all (start-up, evaluation): a run of any
    # budget costs 4 s on top of its budget, not 5x its budget.
    done = RunOutcome(
        RunKey("s1", "c_a", 1, "block-a"),
        "succeeded",
        summary={"training_seconds": 1.0},
        elapsed_seconds=5.0,
    )
    state.done.append(done)
    state.pending = 5
    view.event(state, done)
    assert view.run_seconds(1.0) == 5.0 and view.run_seconds(3.0) == 7.0
    assert view.stage_eta() == 3 * 5.0  # 5 runs over 2 slots: 3 rounds
    assert view.overall_eta() == 15.0 + 2 * 6.0 + 1 * 7.0
    assert view.headline() == "walk: stage 1 of 3 (s1), ETA stage 15s, overall 34s"


def test_eta_uses_the_wall_time_of_the_studys_recorded_runs(tmp_path: Path) -> None:
    """Runs an earlier walk recorded calibrate a new walk's estimate before any run finishes."""
    study = load_study(walk_study(tmp_path / "s"))
    plan = build_plan(study)

    @dataclass(frozen=True)
    class Rec:
        stage: str
        condition_id: str
        seed: int
        host: str
        status: str = "succeeded"
        training_seconds: float | None = 1.1
        started_at: str | None = "2026-01-01T00:00:00Z"
        finished_at: str | None = "2026-01-01T00:00:09.100000Z"

    view = WalkReporter()
    view.enter(study, 2, [plan.stage("s3")], [Rec("s1", "c_a", 1, "block-a")])
    view.begin(StageState("s2", total=4, pending=4, slots=2))
    # 9.1 s of wall for 1.1 s of training on a 1 s budget: overhead 8 s, k = 1.1.
    assert abs(view.run_seconds(2.0) - (8.0 + 2.2)) < 1e-9
    assert abs(view.stage_eta() - 2 * 10.2) < 1e-9
    assert [c["stage"] for c in view.eta_checks()] == ["s2"]


def test_api_refusals_change_nothing(tmp_path: Path) -> None:
    study = load_study(walk_study(tmp_path / "s"))
    with Ledger.open(study.root) as ledger:
        with pytest.raises(ExecutorError, match="--through s9: no such stage"):
            run_study(study, ledger, through="s9")
        with pytest.raises(FrozenRuleMismatch, match="gate g1 is not frozen"):
            run_study(study, ledger)
        assert ledger.runs() == [] and ledger.freezes() == []


def test_api_dry_run_lists_every_step(tmp_path: Path) -> None:
    study = load_study(walk_study(tmp_path / "s", g2_extra='decide = "manual"'))
    with Ledger.open(study.root) as ledger:
        walk = run_study(study, ledger, dry_run=True)
        assert walk.outcome == "dry_run" and walk.exit_code == 0
        lines = dry_run_lines(walk)
        assert lines[0].startswith("gate g1 blocks: gate g1 is not frozen")
        assert "gate g2 waits for `stagewise decide` (manual)" in lines
        assert lines[-1].startswith("stage s3 (3s, seeds [3], hosts block-a, block-b)")
        assert [s["step"] for s in walk.as_dict()["dry_run"]][:3] == ["gate", "stage", "decide"]
        assert ledger.runs() == []
