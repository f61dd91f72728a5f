"""Seed planning: seeds per host for a later gate's rules, from the variance at an earlier one."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.gates.seed_planning import seeds_for, upstream_gates
from stagewise.study.model import Study
from tests.gates.two_host_study import evaluate_values, write_study


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return write_study(tmp_path)


def test_upstream_gates_nearest_first(study: Study) -> None:
    assert upstream_gates(study, "g2") == ["gp"]
    assert upstream_gates(study, "gp") == []


def test_seed_rows_per_threshold_rule_reach_the_power(study: Study) -> None:
    # The spread observed at gp (two hosts, one seed) plans g2's two threshold rules.
    ev = evaluate_values(
        study,
        "gp",
        {
            ("ref", "h0"): 1.0,
            ("ref", "h1"): 1.0,
            ("a", "h0"): 1.012,
            ("a", "h1"): 1.004,
            ("b", "h0"): 0.996,
            ("b", "h1"): 1.000,
        },
    )
    plan = seeds_for(study, "g2", ev, confidence=0.9, power=0.9)
    assert plan.planned_hosts == 2 and plan.planned_seeds_per_host == 1
    rows = {(r.rule, r.condition_id): r for r in plan.rows}
    assert set(rows) == {("mean_gap_to_reference", "a"), ("max_gap_to_reference", "b")}
    mean_row = rows[("mean_gap_to_reference", "a")]
    assert mean_row.observed_gap == pytest.approx(0.008)
    assert mean_row.achievable and mean_row.seeds_per_host is not None
    assert mean_row.advice is not None and mean_row.advice.simulated_power is not None
    assert mean_row.advice.simulated_power >= 0.9 - 0.03
    keys = set(mean_row.to_json())
    contract = {"gate", "condition_id", "rule", "threshold", "observed_gap", "sigma_d"}
    assert contract | {"seeds_per_host", "hosts", "achievable"} <= keys


def test_promote_gate_gets_a_selection_row(study: Study) -> None:
    ev = evaluate_values(
        study,
        "gp",
        {
            ("ref", "h0"): 1.0,
            ("ref", "h1"): 1.0,
            ("a", "h0"): 0.99,
            ("a", "h1"): 0.995,
            ("b", "h0"): 1.0,
            ("b", "h1"): 1.002,
        },
    )
    plan = seeds_for(study, "gp", ev)
    (row,) = [r for r in plan.rows if r.rule == "best_k"]
    assert row.condition_id == "a" and row.threshold is None
    assert row.p_correct_selection is not None and 0.5 <= row.p_correct_selection <= 1.0
    assert row.observed_gap == pytest.approx(1.001 - 0.9925)


def test_rule_naming_a_condition_absent_at_the_source_gets_a_row(study: Study) -> None:
    ev = evaluate_values(
        study,
        "gp",
        {("ref", "h0"): 1.0, ("ref", "h1"): 1.0, ("a", "h0"): 1.01, ("a", "h1"): 1.02},
    )
    plan = seeds_for(study, "g2", ev)
    row = next(r for r in plan.rows if r.condition_id == "b")
    assert row.rule == "max_gap_to_reference" and row.achievable is False
    assert row.observed_gap is None and "no complete cells at gp" in row.note
    assert row.to_json()["seeds_per_host"] is None


def test_a_condition_without_cells_at_the_source_gets_an_unplanned_row(study: Study) -> None:
    ev = evaluate_values(
        study,
        "gp",
        {("ref", "h0"): 1.0, ("ref", "h1"): 1.0, ("a", "h0"): 1.012, ("a", "h1"): 1.004},
    )
    plan = seeds_for(study, "g2", ev, confidence=0.9, power=0.9)
    row = {r.condition_id: r for r in plan.rows}["b"]
    assert row.rule == "max_gap_to_reference" and row.rule_index == 1 and row.threshold == 0.01
    assert row.statistic == "max_gap_to_reference" and row.observed_gap is None
    assert row.advice is None and row.seeds_per_host is None and not row.achievable
    assert row.note == "no complete cells at gp: nothing to plan from"
    assert row.planned_hosts == 2 and row.sigma_d is not None
