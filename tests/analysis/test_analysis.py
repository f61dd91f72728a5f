"""Pure analysis functions against hand-computed numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagewise.analysis.agreement import kendalls_w, leave_one_cell_out
from stagewise.analysis.budget import counterfactual, stage_budget, total
from stagewise.analysis.cells import Cell, StageCells, pool_cells
from stagewise.analysis.ranks import rank_min, summarise_ranks
from stagewise.analysis.sensitivity import DEFAULT_GRID, parse_grid, sweep
from stagewise.analysis.stats import mean, pool_stats, sample_sd, sum_or_none


@dataclass(frozen=True)
class R:
    stage: str
    condition_id: str
    seed: int
    host: str
    val_bpb: float | None
    status: str = "succeeded"
    training_seconds: float | None = None
    total_tokens_M: float | None = None
    num_params_M: float | None = None


def test_rank_min_ties_share_the_lowest() -> None:
    assert rank_min({"a": 1.0, "b": 0.5, "c": 1.0, "d": 2.0}) == {"a": 2, "b": 1, "c": 2, "d": 4}


def test_summarise_ranks() -> None:
    c1, c2 = Cell("s", 1, "h1"), Cell("s", 1, "h2")
    s = summarise_ranks({c1: {"a": 1}, c2: {"a": 3}}, "a")
    assert s is not None and (s.mean_rank, s.best_rank, s.worst_rank, s.first_rank_cells) == (
        2.0,
        1,
        3,
        1,
    )


def test_mean_sd_sums() -> None:
    assert mean([]) is None
    assert sample_sd([1.0]) is None
    assert sample_sd([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert sum_or_none([1.0, None]) is None
    assert sum_or_none([1.0, 2.5]) == 3.5


def test_pool_intersects_planned_candidates_and_names_missing_cells() -> None:
    stages = [
        StageCells("s1", (1,), ("h1", "h2"), ("a", "b", "c")),
        StageCells("s2", (2,), ("h1", "h2"), ("a", "b")),
    ]
    runs = [
        R(s, c, seed, h, 1.0 + i / 10)
        for i, (s, seed) in enumerate((("s1", 1), ("s2", 2)))
        for c in ("a", "b", "c")
        for h in ("h1", "h2")
    ]
    runs = [r for r in runs if not (r.condition_id == "b" and r.stage == "s2" and r.host == "h2")]
    runs.append(R("s1", "a", 1, "h1", None, status="failed"))  # superseded row is ignored
    pool = pool_cells(stages, [r for r in runs if r.val_bpb is not None], ("a", "b", "c"))
    assert pool.conditions == ("a", "b")  # c is planned only in s1
    assert pool.complete == ("a",)
    assert pool.missing == {"b": (Cell("s2", 2, "h2"),)}
    assert len(pool.without(Cell("s2", 2, "h2")).complete) == 2


def test_pool_stats_gaps_and_reference() -> None:
    stages = [StageCells("s", (1, 2), ("h",), None)]
    runs = [
        R("s", "ref", 1, "h", 1.00, training_seconds=3600, total_tokens_M=5),
        R("s", "ref", 2, "h", 1.02, training_seconds=1800, total_tokens_M=5),
        R("s", "x", 1, "h", 1.03, num_params_M=7.5),
        R("s", "x", 2, "h", 1.02, num_params_M=7.5),
    ]
    stats = pool_stats(pool_cells(stages, runs), "ref")
    x = stats.conditions["x"]
    assert x.mean_gap_to_reference == pytest.approx(0.015)
    assert x.max_gap_to_reference == pytest.approx(0.03)
    assert x.params_M == 7.5 and x.tokens_M is None
    assert stats.conditions["ref"].training_hours == pytest.approx(1.5)
    assert stats.conditions["ref"].tokens_M == 10
    assert x.gap_from_best == pytest.approx(0.015)


def test_kendalls_w_perfect_and_none() -> None:
    cells = [Cell("s", i, "h") for i in range(3)]
    values = {"a": dict.fromkeys(cells, 1.0), "b": dict.fromkeys(cells, 2.0)}
    assert kendalls_w(cells, values, ["a", "b"]) == pytest.approx(1.0)
    assert kendalls_w(cells[:1], values, ["a", "b"]) is None
    # opposite orders in two cells: no concordance
    values = {"a": {cells[0]: 1.0, cells[1]: 2.0}, "b": {cells[0]: 2.0, cells[1]: 1.0}}
    assert kendalls_w(cells[:2], values, ["a", "b"]) == pytest.approx(0.0)


def test_leave_one_cell_out() -> None:
    cells = [Cell("s", i, "h") for i in range(3)]
    out = leave_one_cell_out(cells, ["a"], lambda c: ["a"] if c.seed else ["b"])
    assert [o.changed for o in out] == [True, False, False]


def test_sweep_and_grid() -> None:
    assert DEFAULT_GRID == (0.005, 0.01, 0.015, 0.02, 0.025, 0.03)
    s = sweep(0.022927)
    assert s.verdicts == ("fail", "fail", "fail", "fail", "pass", "pass")
    assert s.smallest_passing == 0.025 and s.flip_threshold == 0.022927
    assert sweep(0.02).smallest_passing == 0.02  # inclusive
    assert sweep(0.0327865).note() == "fails through 0.030"
    assert sweep(None).verdicts[0] == "undefined"
    assert parse_grid("0.02, 0.01,0.02") == (0.01, 0.02)
    with pytest.raises(ValueError, match="'x'"):
        parse_grid("0.01,x")
    with pytest.raises(ValueError, match="empty"):
        parse_grid(",")


@given(st.floats(0, 1), st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_sweep_monotone(observed: float, grid: list[float]) -> None:
    s = sweep(observed, sorted(set(grid)))
    seen_pass = False
    for v in s.verdicts:
        seen_pass = seen_pass or v == "pass"
        assert v == "pass" or not seen_pass


def test_budget_functions() -> None:
    runs = [
        R("s", "a", 1, "h", 1.0, training_seconds=1800.0),
        R("s", "b", 1, "h", 1.0, training_seconds=1800.0),
        R("t", "a", 1, "h", 1.0),
    ]
    sb = stage_budget("s", 3, 2, 2, 3600.0, runs)
    assert (sb.budgeted_gpu_hours, sb.recorded_gpu_hours, sb.runs_recorded) == (12.0, 1.0, 2)
    assert stage_budget("t", None, 1, 1, 60.0, runs).recorded_gpu_hours is None
    assert total([1.0, None]) is None
    final = [
        stage_budget("f", 3, 1, 2, 12 * 3600.0, []),
        stage_budget("g", 3, 1, 2, 12 * 3600.0, []),
    ]
    cf = counterfactual("g10", "x", 9, final, 144.0)
    assert (cf.confirmation_gpu_hours, cf.added_vs_executed) == (432.0, 288.0)
    assert math.isclose(final[0].hours_per_candidate, 24.0)
