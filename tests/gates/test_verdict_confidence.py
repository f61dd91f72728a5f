"""Verdict confidence at a gate: replicates judged by the gate's own rules, counted by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.analysis.confidence import BootstrapDesign
from stagewise.analysis.variance import decompose
from stagewise.errors import StudyError
from stagewise.gates.confidence import gate_variance, replicate_pool, verdict_confidence
from stagewise.study.model import Study
from tests.gates.two_host_study import evaluate_values, write_study


@pytest.fixture
def study(tmp_path: Path) -> Study:
    return write_study(tmp_path)


def test_max_gap_verdict_flips_in_a_quarter_of_replicates(study: Study) -> None:
    # a's gap is 0.005 on h0 and 0.020 on h1: it fails the 0.01 max-gap rule. A replicate that
    # draws h0 twice (probability 1/4) sees only 0.005 and passes, so p_verdict = 3/4.
    ev = evaluate_values(
        study,
        "gmax",
        {("ref", "h0"): 1.0, ("ref", "h1"): 1.1, ("a", "h0"): 1.005, ("a", "h1"): 1.12},
    )
    assert ev.judgement.verdicts["a"] == "fail"
    conf = verdict_confidence(ev, seed=1)
    row = conf.condition("a")
    assert row is not None and row.p_verdict is not None
    assert row.p_verdict == pytest.approx(0.75, abs=0.05)
    assert row.decisive is False
    assert set(row.verdicts) == {"pass", "fail"}
    assert sum(row.verdicts.values()) == conf.verdict_replicates
    assert row.interval is not None
    bounds = row.interval.max_gap
    assert bounds is not None
    lo, hi = bounds
    assert lo == pytest.approx(0.005) and hi == pytest.approx(0.02)
    # The one-seed-per-host and two-block limits are said, not hidden.
    assert any("one seed per host" in n for n in conf.notes)
    assert any("only 2 host blocks" in n for n in conf.notes)


def test_rules_comparing_conditions_are_reapplied(study: Study) -> None:
    # best_k k=1 between a and b: a is best on h0 by 0.03, b on h1 by 0.01, so a has the best
    # mean. Replicates drawing h1 twice (1/4) promote b instead.
    ev = evaluate_values(
        study,
        "gp",
        {
            ("ref", "h0"): 1.0,
            ("ref", "h1"): 1.0,
            ("a", "h0"): 0.97,
            ("b", "h0"): 1.00,
            ("a", "h1"): 1.01,
            ("b", "h1"): 1.00,
        },
    )
    assert ev.judgement.verdicts["a"] == "promote" and ev.judgement.verdicts["b"] == "stop"
    conf = verdict_confidence(ev, seed=2)
    pa, pb = conf.condition("a"), conf.condition("b")
    assert pa is not None and pb is not None
    assert pa.p_verdict == pytest.approx(0.75, abs=0.05)
    assert pb.p_verdict == pa.p_verdict  # the two verdicts flip together
    ref = conf.condition("ref")
    assert ref is not None and ref.p_verdict == 1.0 and ref.decisive is True  # kept always


def test_same_seed_same_numbers_other_seed_other_draws(study: Study) -> None:
    values = {("ref", "h0"): 1.0, ("ref", "h1"): 1.1, ("a", "h0"): 1.005, ("a", "h1"): 1.12}
    ev = evaluate_values(study, "gmax", values)
    one, two = verdict_confidence(ev, seed=5), verdict_confidence(ev, seed=5)
    assert one.to_json() == two.to_json()
    assert [c.fields() for c in one.conditions] == [c.fields() for c in two.conditions]
    other = verdict_confidence(ev, seed=6)
    assert other.condition("a") != one.condition("a")


def test_incomplete_condition_gets_null_keys(study: Study) -> None:
    ev = evaluate_values(
        study, "gmax", {("ref", "h0"): 1.0, ("ref", "h1"): 1.1, ("a", "h0"): 1.005}
    )
    conf = verdict_confidence(ev)
    row = conf.condition("a")
    assert row is not None and row.verdict == "incomplete"
    assert row.fields()["p_verdict"] is None and row.fields()["interval"] is None


def test_confidence_level_is_checked(study: Study) -> None:
    ev = evaluate_values(study, "gmax", {("ref", "h0"): 1.0, ("ref", "h1"): 1.1})
    for bad in (1.0, 0.2, float("nan")):
        with pytest.raises(StudyError, match="--confidence"):
            verdict_confidence(ev, confidence=bad)


def test_replicate_pool_relabels_drawn_cells(study: Study) -> None:
    ev = evaluate_values(
        study,
        "gmax",
        {("ref", "h0"): 1.0, ("ref", "h1"): 1.1, ("a", "h0"): 1.005, ("a", "h1"): 1.12},
    )
    design = BootstrapDesign.from_cells(ev.pool.cells)
    rep = replicate_pool(ev.pool, design, [(0, 0, 1), (1, 0, 1)])  # h1 drawn twice
    assert [c.label for c in rep.cells] == ["b0/seed0", "b1/seed0"]
    assert list(rep.values("a").values()) == [1.12, 1.12]
    assert rep.complete == ev.pool.complete


def test_gate_variance_matches_decompose(study: Study) -> None:
    ev = evaluate_values(
        study,
        "gp",
        {
            ("ref", "h0"): 1.0,
            ("ref", "h1"): 1.0,
            ("a", "h0"): 0.97,
            ("b", "h0"): 1.00,
            ("a", "h1"): 1.01,
            ("b", "h1"): 1.00,
        },
    )
    pooled, per = gate_variance(ev.pool, "ref")
    assert set(per) == {"a", "b"}  # the reference's zero gaps are not pooled
    assert per["a"] == decompose({"h0": [0.97 - 1.0], "h1": [1.01 - 1.0]})
    assert pooled is not None and pooled.df_host == 2 and pooled.df_seed == 0
    # One seed per host: the host mean square holds everything. By hand: a's gaps -0.03, 0.01
    # (mean -0.01, SS 2 * 0.02^2 = 0.0008, df 1); b's gaps 0, 0 (SS 0, df 1): 0.0008 / 2.
    assert pooled.var_host == pytest.approx(0.0008 / 2)


def test_too_large_a_gate_gets_intervals_but_no_p_verdict(
    study: Study, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stagewise.gates.confidence as gc

    values = {("ref", "h0"): 1.0, ("ref", "h1"): 1.1, ("a", "h0"): 1.005, ("a", "h1"): 1.12}
    ev = evaluate_values(study, "gmax", values)
    # Two conditions x two cells = 4 values; a budget of 100 values fits 25 < 100 replicates.
    monkeypatch.setattr(gc, "VERDICT_WORK", 100)
    conf = verdict_confidence(ev)
    assert conf.verdict_replicates == 0
    row = conf.condition("a")
    assert row is not None and row.p_verdict is None and row.decisive is None
    assert row.interval is not None and row.interval.max_gap is not None
    assert any("p_verdict not computed" in n for n in conf.notes)
    # Between the floor and the full count, the judged replicates shrink with the budget.
    monkeypatch.setattr(gc, "VERDICT_WORK", 4 * 300)
    assert verdict_confidence(ev).verdict_replicates == 300
