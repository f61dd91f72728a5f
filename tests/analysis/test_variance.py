"""Variance components of gaps with hosts as blocks, checked by hand on small tables."""

from __future__ import annotations

import math

import pytest

from stagewise.analysis.variance import decompose, decompose_pooled


def test_balanced_two_hosts_three_seeds_by_hand() -> None:
    # host means 2 and 5, grand mean 3.5:
    # SS_between = 3 * (1.5^2 + 1.5^2) = 13.5 on 1 df; SS_within = (1+0+1) * 2 = 4 on 4 df.
    vc = decompose({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]})
    assert (vc.df_host, vc.df_seed) == (1, 4)
    assert vc.ms_host == pytest.approx(13.5)
    assert vc.ms_seed == pytest.approx(1.0)
    assert vc.var_seed == pytest.approx(1.0)
    assert vc.var_host == pytest.approx((13.5 - 1.0) / 3)
    # the mean over 2 new hosts with 3 seeds each
    assert vc.var_of_mean(2, 3) == pytest.approx(vc.var_host / 2 + 1.0 / 6)


def test_host_component_clipped_at_zero() -> None:
    # identical host means: MS_between = 0 < MS_within
    vc = decompose({"a": [0.0, 2.0], "b": [2.0, 0.0]})
    assert vc.var_host == 0.0
    assert vc.var_seed == pytest.approx(2.0)  # SS_within 4 on 2 df


def test_one_seed_per_host_has_no_seed_component() -> None:
    vc = decompose({"a": [1.0], "b": [3.0]})
    assert vc.df_seed == 0 and vc.var_seed is None
    assert vc.var_host == pytest.approx(2.0)  # (1-2)^2 + (3-2)^2 on 1 df
    assert vc.var_of_mean(2, 1) is None


def test_one_host_has_no_host_component() -> None:
    vc = decompose({"a": [1.0, 3.0]})
    assert vc.df_host == 0 and vc.var_host is None
    assert vc.var_seed == pytest.approx(2.0)


def test_unbalanced_uses_effective_seeds_per_host() -> None:
    vc = decompose({"a": [1.0, 2.0, 3.0], "b": [5.0]})
    # n0 = (N - sum n_h^2 / N) / (k - 1) = (4 - 10/4) / 1 = 1.5
    assert vc.seeds_per_host == pytest.approx(1.5)
    # grand 2.75; SS_b = 3*(2-2.75)^2 + 1*(5-2.75)^2 = 1.6875 + 5.0625 = 6.75; SS_w = 2 on 2 df
    assert vc.ms_host == pytest.approx(6.75)
    assert vc.var_host == pytest.approx((6.75 - 1.0) / 1.5)


def test_pooled_adds_sums_of_squares_and_df() -> None:
    one = {"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0]}
    shifted = {"a": [11.0, 12.0, 13.0], "b": [14.0, 15.0, 16.0]}  # same spread, other level
    vc = decompose_pooled({"x": one, "y": shifted})
    assert (vc.df_host, vc.df_seed) == (2, 8)
    assert vc.ms_host == pytest.approx(13.5)  # 27 / 2
    assert vc.ms_seed == pytest.approx(1.0)  # 8 / 8
    assert vc.to_json()["sd_seed"] == pytest.approx(1.0)
    assert math.isclose(vc.var_host or 0.0, 12.5 / 3)


def test_empty_input() -> None:
    assert decompose({}).var_host is None
    assert decompose_pooled({}).n_cells == 0
