"""The walk's pieces in-process: the overall ETA, the Python API's refusals and its dry run."""

from __future__ import annotations

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
    # A run took twice its budget (start-up, evaluation): later stages are scaled by that.
    done = RunOutcome(RunKey("s1", "c_a", 1, "block-a"), "succeeded", elapsed_seconds=2.0)
    state.done.append(done)
    state.pending = 5
    view.event(state, done)
    assert view.stage_eta() == 5 * 2.0 / 2
    assert view.overall_eta() == 5.0 + 8.0 + 6.0
    assert view.headline() == "walk: stage 1 of 3 (s1), ETA stage 5s, overall 19s"


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
