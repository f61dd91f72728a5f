"""Policies on hand-computed, noise-free tables (one seed, one host unless stated)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.backtest.draw import draw
from stagewise.backtest.policies import parse_policies
from stagewise.backtest.policies.base import ReplayContext
from stagewise.backtest.policies.hyperband import bracket_sizes
from stagewise.backtest.replay import backtest
from stagewise.backtest.table import CurveRow, CurvesError, build_table
from tests.backtest.helpers import table_from

BUDGETS = [10.0, 30.0, 90.0]
NAMES = "abcdefghi"
# Level 0 orders a < b < ... < i; at level 1 d would be best (but only runs with eta=2); at the
# final level the order is reversed, so the truth is i, which every early screen drops.
LEVEL1 = {"a": 0.9, "b": 0.8, "c": 0.85, "d": 0.7}
VALUES = {c: [1.0 + 0.1 * i, LEVEL1.get(c, 0.95), 0.6 - 0.05 * i] for i, c in enumerate(NAMES)}


def runs_of(
    policy_text: str, table=None, replays: int = 3
) -> tuple[list[np.ndarray], ReplayContext]:
    table = table or table_from(VALUES, BUDGETS)
    ctx = ReplayContext(draw(table, replays, seed=0), seed=0)
    return parse_policies(policy_text)[0].run(ctx), ctx


def kept(runs: list[np.ndarray], level: int, replay: int = 0) -> set[str]:
    return {NAMES[c] for c in np.flatnonzero(runs[level][replay])}


def result(policy_text: str, table=None):
    table = table or table_from(VALUES, BUDGETS)
    return backtest(table, parse_policies(policy_text), replays=5, seed=0).policies


def test_sh_eta3_keeps_the_hand_computed_sets_and_costs_their_sum() -> None:
    runs, _ = runs_of("sh:eta=3")
    for r in range(3):
        assert kept(runs, 0, r) == set(NAMES)  # all nine at 10 s
        assert kept(runs, 1, r) == {"a", "b", "c"}  # floor(9/3) = 3 best at level 0
        assert kept(runs, 2, r) == {"b"}  # max(1, floor(3/3)) = 1: b (0.80) beats c, a
    (p,) = result("sh:eta=3")
    assert p.gpu_hours == pytest.approx((9 * 10 + 3 * 30 + 1 * 90) / 3600)
    assert p.p_retain == 0 and p.p_select == 0
    assert p.mean_regret == pytest.approx(0.55 - 0.2)  # b's final value minus i's
    assert p.cost_vs_final_only == pytest.approx(270 / (9 * 90))


def test_sh_eta2_promotes_by_the_level_it_just_ran() -> None:
    runs, _ = runs_of("sh:eta=2")
    assert kept(runs, 1) == {"a", "b", "c", "d"}  # floor(9/2) = 4
    assert kept(runs, 2) == {"d", "b"}  # d (0.70) and b (0.80) at level 1
    (p,) = result("sh:eta=2")
    assert p.gpu_hours == pytest.approx((9 * 10 + 4 * 30 + 2 * 90) / 3600)
    assert p.chosen == {"d": 1.0}  # d's final 0.45 beats b's 0.55


def test_final_only_retains_and_selects_the_truth() -> None:
    (p,) = result("final_only")
    assert p.p_retain == 1 and p.p_select == 1 and p.mean_regret == 0
    assert p.gpu_hours == pytest.approx(9 * 90 / 3600) and p.cost_vs_final_only == 1


def test_top_k_that_drops_the_final_best_early_never_retains_it() -> None:
    for k in (1, 2, 8):
        (p,) = result(f"top_k:k={k}")
        assert p.p_retain == 0 and p.p_select == 0
        assert p.gpu_hours == pytest.approx((9 * 10 + k * 90) / 3600)
    (p,) = result("top_k:k=9")
    assert p.p_retain == 1


def test_ties_break_by_mean_rank_then_condition_id() -> None:
    # Two seeds at level 0: a and b tie on the mean (1.0); b has the better mean rank (2.0
    # against 2.5), so with two to keep it goes on with c, although 'a' < 'b'.
    cells = {
        ("c", 1): 0.9, ("a", 1): 1.0, ("b", 1): 1.3, ("d", 1): 5.0,
        ("c", 2): 0.95, ("a", 2): 1.0, ("b", 2): 0.7, ("d", 2): 5.0,
    }  # fmt: skip
    rows = [CurveRow(c, 10.0, s, "h1", v) for (c, s), v in cells.items()]
    rows += [CurveRow(c, 30.0, s, "h1", 1.0 + i) for i, c in enumerate("abcd") for s in (1, 2)]
    table = build_table(rows, "ties")
    ctx = ReplayContext(draw(table, 4, [2, 2], seed=1), seed=1)
    runs = parse_policies("sh:eta=2")[0].run(ctx)
    cond = table.conditions
    assert {cond[i] for i in np.flatnonzero(runs[1][0])} == {"c", "b"}
    # One cell, equal values: condition_id decides (b is first in the table, a wins).
    table = table_from({"b": [1.0, 2.0], "a": [1.0, 2.0], "c": [3.0, 1.0]}, [10.0, 20.0])
    ctx = ReplayContext(draw(table, 2, seed=0), seed=0)
    runs = parse_policies("sh:eta=3")[0].run(ctx)
    assert [table.conditions[i] for i in np.flatnonzero(runs[1][0])] == ["a"]


def test_hyperband_brackets_and_cost() -> None:
    assert bracket_sizes(9, 3, 3) == [(0, 9), (1, 5), (2, 3)]
    (p,) = result("hyperband:eta=3")
    # bracket 0: sh from level 0 (270 s); bracket 1: 5 at 30 s, 1 at 90 s; bracket 2: 3 at 90 s
    assert p.gpu_hours == pytest.approx((270 + 5 * 30 + 1 * 90 + 3 * 90) / 3600)


def test_asha_promotes_the_best_of_two_once_both_finished() -> None:
    table = table_from({"x": [2.0, 1.0], "y": [1.0, 3.0]}, [10.0, 20.0])
    ctx = ReplayContext(draw(table, 6, seed=0), seed=0)
    runs = parse_policies("asha:eta=2")[0].run(ctx)
    assert (runs[0] == 1).all()  # both arrive and run at 10 s, whatever the order
    assert (runs[1][:, 1] == 1).all() and (runs[1][:, 0] == 0).all()  # y (1.0) promoted


def test_asha_only_promotes_what_ran_below() -> None:
    table = table_from(VALUES, BUDGETS)
    ctx = ReplayContext(draw(table, 50, seed=3), seed=3)
    runs = parse_policies("asha:eta=2")[0].run(ctx)
    for lower, upper in itertools.pairwise(runs):
        assert not ((upper > 0) & (lower == 0)).any()
    assert max(r.max() for r in runs) == 1


def test_policy_parameters_are_validated() -> None:
    with pytest.raises(CurvesError, match=r"sh:eta must be >= 2, but got eta=1"):
        parse_policies("sh:eta=1")
    with pytest.raises(CurvesError, match=r"unknown policy 'bogus'"):
        parse_policies("bogus")
    with pytest.raises(CurvesError, match=r"top_k has no parameter 'eta'"):
        parse_policies("top_k:eta=2")
    with pytest.raises(CurvesError, match=r"top_k:k must be an integer, but got 'x'"):
        parse_policies("top_k:k=x")
    labels = [p.label for p in parse_policies("final_only,top_k:k=2,sh,eta=2")]
    assert labels == ["final_only", "top_k:k=2", "sh:eta=2"]


@st.composite
def tables(draw_: st.DrawFn):
    n_cond = draw_(st.integers(2, 6))
    n_lev = draw_(st.integers(2, 4))
    n_seed = draw_(st.integers(1, 3))
    values = draw_(
        st.lists(
            st.floats(0.5, 2.0, allow_nan=False),
            min_size=n_cond * n_lev * n_seed,
            max_size=n_cond * n_lev * n_seed,
        )
    )
    it = iter(values)
    rows = [
        CurveRow(f"c{c}", 10.0 * 2**lv, s + 1, "h1", next(it))
        for c in range(n_cond)
        for lv in range(n_lev)
        for s in range(n_seed)
    ]
    return build_table(rows, "hyp")


@settings(max_examples=40, deadline=None)
@given(tables(), st.integers(0, 1000))
def test_top_k_p_retain_never_decreases_with_k(table, seed) -> None:
    n = len(table.conditions)
    res = backtest(
        table,
        parse_policies(",".join(f"top_k:k={k}" for k in range(1, n + 1))),
        replays=8,
        seed=seed,
    )
    retains = [p.p_retain for p in res.policies]
    assert all(a <= b for a, b in itertools.pairwise(retains))
    assert retains[-1] == 1
    assert all(math.isfinite(p.gpu_hours) for p in res.policies)


def test_optuna_pruners_run_in_process_deterministically_and_without_warnings() -> None:
    pytest.importorskip("optuna")  # warnings are errors here: ExperimentalWarning must not leak
    table = table_from(VALUES, BUDGETS)
    text = "optuna-sh:eta=3,optuna-hyperband:eta=3,optuna-wilcoxon:p=0.1"
    first = backtest(table, parse_policies(text), replays=6, seed=2)
    second = backtest(table, parse_policies(text), replays=6, seed=2)
    assert [p.to_json() for p in first.policies] == [p.to_json() for p in second.policies]
    ctx = ReplayContext(draw(table, 6, seed=2), seed=2)
    for policy in parse_policies(text):
        runs = policy.run(ctx)
        assert (runs[0] == 1).all()  # every trial reports the first level
        for lower, upper in itertools.pairwise(runs):  # a pruned trial reports nothing later
            assert not ((upper > 0) & (lower == 0)).any()
        assert (runs[-1].sum(axis=1) >= 1).all()  # the first trial is never pruned


def test_study_policy_on_cells_split_unevenly_over_hosts() -> None:
    from importlib.resources import files

    from stagewise.backtest.synthetic import SyntheticSpec, synthetic_rows
    from stagewise.study import load_study

    study = load_study(str(files("stagewise.examples") / "curves" / "synthetic_study"))
    table = build_table(synthetic_rows(SyntheticSpec(flip=0.0)), "syn")
    # Three cells per early level on two hosts: 2 + 1, so the gate reads one pseudo-host per cell.
    res = backtest(
        table, parse_policies("study"), replays=4, cells=(3, 3, 3, 3, 3, 16), study=study
    )
    (p,) = res.policies
    assert p.p_retain == 1  # no flipping: the screen's best four hold the truth
    # screen: 12 x 3 cells x 60 s; replicate: 4 x 3 x 540 s; confirm: 2 or 3 x 16 x 14580 s
    assert p.runs_per_level[0] == 36 and p.runs_per_level[2] == 12
    assert "stage replicate (540s) -> level 540s" in p.notes


def _asha_stop_by_hand(ctx: ReplayContext, eta: float, label: str) -> list[np.ndarray]:
    """Ray Tune's ASHA bracket, one trial at a time, written plainly per replay."""
    runs = ctx.zeros()
    arrivals = np.argsort(ctx.rng(label).random((ctx.replays, ctx.n_conditions)), axis=1)
    for r in range(ctx.replays):
        recorded: list[list[float]] = [[] for _ in range(ctx.n_levels - 1)]
        for c in arrivals[r]:
            for li in range(ctx.n_levels):
                runs[li][r, c] += 1
                if li == ctx.n_levels - 1:
                    break
                reward = -float(ctx.draws.levels[li].means[r, c])
                rung = recorded[li]
                cutoff = np.percentile(rung, (1 - 1 / eta) * 100) if rung else None
                rung.append(reward)
                if cutoff is not None and reward < cutoff:
                    break
    return runs


@pytest.mark.parametrize("eta", [2, 3, 4])
def test_asha_stop_matches_a_plain_port_of_ray_tunes_rule(eta: int) -> None:
    rng = np.random.default_rng(eta)
    values = {c: list(rng.normal(1.0, 0.1, size=4)) for c in NAMES}
    table = table_from(values, [10.0, 30.0, 90.0, 270.0])
    ctx = ReplayContext(draw(table, 40, seed=eta), seed=eta)
    policy = parse_policies(f"asha-stop:eta={eta}")[0]
    runs = policy.run(ctx)
    for ours, plain in zip(runs, _asha_stop_by_hand(ctx, eta, policy.label), strict=True):
        np.testing.assert_array_equal(ours, plain)
    # The first arrival of every replay reaches the final level: ASHA-stop never stalls.
    assert (runs[-1].sum(axis=1) >= 1).all()
    for lower, upper in itertools.pairwise(runs):
        assert not ((upper > 0) & (lower == 0)).any()


def test_asha_stop_keeps_going_only_what_beats_the_rung_quantile() -> None:
    # Two conditions, eta=2: the second arrival continues only if it is at least as good as
    # the first at level 0 (the median of one value is that value).
    table = table_from({"x": [2.0, 1.0], "y": [1.0, 3.0]}, [10.0, 20.0])
    ctx = ReplayContext(draw(table, 8, seed=0), seed=0)
    runs = parse_policies("asha-stop:eta=2")[0].run(ctx)
    assert (runs[0] == 1).all()
    x_went_on = runs[1][:, 0] == 1  # only when x arrived first
    assert x_went_on.any() and not x_went_on.all()  # both arrival orders occur
    assert (runs[1][:, 1] == 1).all()  # y (1.0) always goes on: first, or better than x
