"""Seed planning: closed-form seed counts, the host floor, and simulated power."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from stagewise.analysis.seed_plan import (
    p_correct_selection,
    plan_max_gap,
    plan_mean_gap,
)
from stagewise.analysis.variance import VarianceComponents


def _vc(var_host: float | None, var_seed: float | None) -> VarianceComponents:
    return VarianceComponents(2, 8, var_host, var_seed, 1, 6, None, None, 4.0)


def test_seed_only_variance_matches_the_normal_formula() -> None:
    z = NormalDist().inv_cdf(0.95) + NormalDist().inv_cdf(0.9)
    adv = plan_mean_gap(0.0, 0.01, _vc(0.0, 0.01**2), hosts=2)
    # n = (z * sigma / delta)^2 / hosts with sigma = delta: z^2 / 2 seeds per host
    assert adv.seeds_per_host == math.ceil(z**2 / 2)
    assert adv.achievable and adv.min_hosts == 1


def test_host_floor_makes_it_unachievable_with_these_hosts() -> None:
    adv = plan_mean_gap(0.0, 0.01, _vc(0.01**2, 0.001**2), hosts=2)
    assert not adv.achievable and adv.seeds_per_host is None
    assert adv.min_hosts is not None and adv.min_hosts > 2  # the answer is "more hosts"


def test_recommended_seeds_reach_the_target_power() -> None:
    for var_host, var_seed, gap in [(0.002**2, 0.006**2, 0.004), (0.0, 0.005**2, 0.015)]:
        adv = plan_mean_gap(gap, 0.01, _vc(var_host, var_seed), hosts=3, seed=3)
        assert adv.achievable and adv.simulated_power is not None
        assert adv.simulated_power >= 0.9 - 0.03, adv


def test_gap_on_the_threshold_is_never_decided() -> None:
    assert not plan_mean_gap(0.01, 0.01, _vc(0.0, 1e-4), hosts=2).achievable


def test_max_gap_rule_planned_by_simulation() -> None:
    failing = plan_max_gap(0.02, 0.01, _vc(0.0, 0.01**2), hosts=2, seed=1)
    assert failing.achievable and failing.simulated_power is not None
    assert failing.simulated_power >= 0.9
    clear_pass = plan_max_gap(-0.05, 0.01, _vc(0.0, 0.005**2), hosts=2, seed=1)
    assert clear_pass.achievable and clear_pass.seeds_per_host == 1


def test_probability_of_correct_selection_grows_with_seeds() -> None:
    means = {"a": 1.00, "b": 1.01, "c": 1.03}
    few = p_correct_selection(means, _vc(0.0, 0.02**2), hosts=2, seeds_per_host=1, seed=0)
    many = p_correct_selection(means, _vc(0.0, 0.02**2), hosts=2, seeds_per_host=16, seed=0)
    assert few is not None and many is not None
    assert few < many
    assert many == pytest.approx(1.0, abs=0.05)


def test_unestimable_components_are_said() -> None:
    adv = plan_mean_gap(0.0, 0.01, _vc(1e-6, None), hosts=2)
    assert "seed component not estimable" in adv.note
