"""The ground truth that ships with the package: valid, and every policy runs on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.backtest import read_curves, shipped_curves, shipped_study
from stagewise.backtest.policies import REGISTRY
from tests.conftest import run_cli


def test_shipped_ground_truth_has_the_promised_shape() -> None:
    table = read_curves(shipped_curves())
    assert len(table.conditions) >= 8
    assert len(table.budgets) >= 5 and table.budgets[-1] / table.budgets[0] >= 16
    assert len(table.seeds) >= 4
    assert all(level.n_cells == len(table.seeds) * len(table.hosts) for level in table.levels)
    assert all(r.training_seconds is not None and r.label for r in table.rows)


def test_backtest_on_the_shipped_ground_truth_runs_every_policy(tmp_path: Path) -> None:
    pytest.importorskip("optuna")  # CI installs the extra; without it those three are skipped
    policies = ",".join(sorted(REGISTRY))
    proc = run_cli(
        "backtest", shipped_curves(), "--study", shipped_study(), "--policies", policies,
        "--replays", "4", "--seed", "1", "--json", "--out", tmp_path / "bt",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert sorted(p["policy"] for p in result["policies"]) == sorted(REGISTRY)
    assert result["truth"]["final_budget_seconds"] == read_curves(shipped_curves()).budgets[-1]
    final_only = next(p for p in result["policies"] if p["policy"] == "final_only")
    assert final_only["p_retain"] == 1 and final_only["cost_vs_final_only"] == 1
    assert (tmp_path / "bt" / "backtest.json").is_file()  # not into the shipped study folder
    study = next(p for p in result["policies"] if p["policy"] == "study")
    assert any(n.startswith("stage confirm (32s) -> level 32s") for n in study["notes"])
