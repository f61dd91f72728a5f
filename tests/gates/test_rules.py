"""Each built-in rule on small hand-made pools: ties, missing cells, an absent reference."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.analysis.sensitivity import sweep
from stagewise.gates.evaluate import Evaluation, evaluate_gate
from stagewise.gates.registry import rule_specs
from stagewise.study import load_study
from stagewise.study.model import Gate, Rule, Study
from tests.gates import synthetic


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return load_study(synthetic.write(Path(tmp_path_factory.mktemp("rules")) / "syn"))


def rule(
    name: str, *, conditions: tuple[str, ...] = (), roles: tuple[str, ...] = (), **params: Any
) -> Rule:
    return Rule(name, params, conditions, roles, "", {"rule": name, **params})


def run(
    study: Study,
    kind: str,
    rules: list[Rule],
    values: dict[str, tuple[float | None, ...]] | None = None,
) -> Evaluation:
    gate = Gate("gX", kind, ("sA", "sB"), tuple(rules))  # type: ignore[arg-type]
    return evaluate_gate(
        study, "gX", synthetic.results(values or synthetic.VALUES), gate=gate, with_stability=False
    )


def test_registry_declares_the_six_rules() -> None:
    specs = rule_specs()
    for name in (
        "best_k",
        "within_gap_of_best",
        "keep",
        "rank_first_in_all_cells",
        "max_gap_to_reference",
        "mean_gap_to_reference",
    ):
        assert name in specs
    assert specs["max_gap_to_reference"].twin == "mean_gap_to_reference"
    assert specs["mean_gap_to_reference"].twin == "max_gap_to_reference"


def test_loader_and_registry_read_one_declaration_of_parameters() -> None:
    """The loader (study layer) and the rules (gates layer) agree on every rule's parameters,
    and a plug-in rule registered with its parameters becomes known to the loader."""
    from stagewise.gates.registry import register_rule
    from stagewise.study.rule_params import rule_params

    params = rule_params()
    for name, spec in rule_specs().items():
        assert params[name].required == spec.required
        assert params[name].threshold_param == spec.threshold_param

    @register_rule("test_plugin_at_most", required={"limit": float}, threshold_param="limit")
    def at_most(rule, stats, targets):  # type: ignore[no-untyped-def]
        return {}

    assert rule_params()["test_plugin_at_most"].required == {"limit": float}
    with pytest.raises(ValueError, match="declare its parameters"):
        register_rule("test_undeclared_rule")


def test_best_k_lowest_means(study: Study) -> None:
    ev = run(study, "promote", [rule("best_k", k=2)])
    assert ev.promoted == ("ref", "v1")


def test_best_k_tie_broken_by_mean_rank_then_id(study: Study) -> None:
    # cmp and v1 hold the same multiset of values, so their means are bit-identical
    values: dict[str, tuple[float | None, ...]] = {
        "ref": (1.0,) * 6,
        "cmp": (0.9, 0.9, 0.9, 0.9, 1.1, 1.1),
        "v1": (1.1, 1.1, 0.9, 0.9, 0.9, 0.9),
        "v2": (2.0,) * 6,
        "v3": (2.0,) * 6,
    }
    ev = run(study, "promote", [rule("best_k", k=1)], values)
    s = ev.stats.conditions
    assert s["cmp"].mean_val_bpb == s["v1"].mean_val_bpb
    assert s["cmp"].mean_rank == s["v1"].mean_rank == 10 / 6
    assert ev.promoted == ("cmp",)  # same mean and mean rank: the condition id decides
    # v2 now beats cmp in the last two cells: cmp ranks 1,1,1,1,4,4 and v1 3,3,1,1,1,1
    values["v2"] = (2.0, 2.0, 2.0, 2.0, 0.95, 0.95)
    ev = run(study, "promote", [rule("best_k", k=1)], values)
    s = ev.stats.conditions
    assert s["cmp"].mean_val_bpb == s["v1"].mean_val_bpb
    assert (s["cmp"].mean_rank, s["v1"].mean_rank) == (2.0, 10 / 6)
    assert ev.promoted == ("v1",)  # same mean: the better mean rank wins


def test_within_gap_of_best_inclusive(study: Study) -> None:
    gap_cmp = 6.19 / 6 - 6.14 / 6
    ev = run(study, "promote", [rule("within_gap_of_best", threshold=round(gap_cmp, 12))])
    assert "cmp" in ev.promoted and "v2" not in ev.promoted
    ev = run(study, "promote", [rule("within_gap_of_best", threshold=gap_cmp - 1e-6)])
    assert ev.promoted == ("ref", "v1")


def test_keep_by_role_and_by_id_ignores_rank(study: Study) -> None:
    ev = run(
        study, "promote", [rule("keep", roles=("comparator",)), rule("keep", conditions=("v2",))]
    )
    assert ev.promoted == ("cmp", "v2")
    assert ev.judgement.verdicts["v1"] == "stop"


def test_keep_of_incomplete_condition_stays_incomplete(study: Study) -> None:
    ev = run(study, "promote", [rule("keep", conditions=("v3",))])
    assert ev.judgement.verdicts["v3"] == "incomplete"
    assert ev.promoted == ()


def test_rank_first_counts_shared_first_ranks(study: Study) -> None:
    values = dict(synthetic.VALUES)
    values["ref"] = (0.9, 0.9, 0.9, 0.9, 0.9, 0.9)
    values["cmp"] = (0.9, 0.9, 0.9, 0.9, 0.9, 0.9)  # tied first everywhere
    ev = run(study, "confirm", [rule("rank_first_in_all_cells")], values)
    assert ev.judgement.verdicts["ref"] == "pass"
    assert ev.judgement.verdicts["cmp"] == "pass"
    assert ev.judgement.verdicts["v1"] == "fail"


def test_max_and_mean_gap_to_reference(study: Study) -> None:
    ev = run(
        study,
        "confirm",
        [
            rule("max_gap_to_reference", conditions=("cmp",), threshold=0.02),
            rule("mean_gap_to_reference", conditions=("v2",), threshold=0.0199),
        ],
    )
    assert ev.judgement.verdicts["cmp"] == "pass"  # 0.02 <= 0.02, float noise within 1e-9
    assert ev.judgement.verdicts["v2"] == "fail"  # mean gap 0.02 > 0.0199
    assert ev.judgement.verdicts["v1"] == "untested"


def test_reference_absent_from_a_cell(study: Study) -> None:
    values = dict(synthetic.VALUES)
    values["ref"] = (1.00, 1.02, 1.04, 1.01, 1.03, None)
    ev = run(
        study, "confirm", [rule("max_gap_to_reference", conditions=("cmp",), threshold=0.5)], values
    )
    assert ev.judgement.verdicts["ref"] == "incomplete"
    assert ev.judgement.verdicts["cmp"] == "fail"
    assert "has no result in h3/seed2" in " ".join(r.text for r in ev.judgement.reasons["cmp"])
    assert ev.stats.conditions["cmp"].max_gap_to_reference is None
    assert ev.stats.conditions["cmp"].mean_gap_to_reference is None


def test_failed_and_nan_runs_are_missing_cells(study: Study) -> None:
    results = synthetic.results()
    results = [
        replace(r, status="failed", val_bpb=None)
        if (r.condition_id, r.host, r.seed) == ("v1", "h1", 1)
        else replace(r, val_bpb=float("nan"))
        if (r.condition_id, r.host, r.seed) == ("v2", "h2", 2)
        else r
        for r in results
    ]
    gate = Gate("gX", "promote", ("sA", "sB"), (rule("keep"),))
    ev = evaluate_gate(study, "gX", results, gate=gate)
    assert set(ev.pool.missing) == {"v1", "v2", "v3"}
    assert ev.promoted == ("ref", "cmp")


# ---------------------------------------------------------------------- properties
cell_value = st.floats(min_value=0.5, max_value=1.5, allow_nan=False).map(lambda v: round(v, 3))
pools = st.fixed_dictionaries(
    {cid: st.tuples(*[cell_value] * 6) for cid in ("ref", "cmp", "v1", "v2", "v3")}
)


@settings(max_examples=60, deadline=None)
@given(values=pools, k=st.integers(min_value=1, max_value=5))
def test_promote_set_contains_keep_targets_and_k_best(study: Study, values, k) -> None:  # type: ignore[no-untyped-def]
    ev = run(study, "promote", [rule("best_k", k=k), rule("keep", roles=("comparator",))], values)
    assert "cmp" in ev.promoted
    best = [c for c in ev.promoted if c != "cmp"]
    assert len(set(ev.promoted) - {"cmp"}) <= k
    assert len(ev.promoted) >= min(k, 5)
    means = {c: s.mean_val_bpb for c, s in ev.stats.conditions.items()}
    stopped = [c for c in means if c not in ev.promoted]
    for c in best:
        for d in stopped:
            assert means[c] <= means[d]  # type: ignore[operator]


@settings(max_examples=60, deadline=None)
@given(values=pools, t1=st.floats(0, 0.5), t2=st.floats(0, 0.5))
def test_confirm_verdict_monotone_in_threshold(study: Study, values, t1, t2) -> None:  # type: ignore[no-untyped-def]
    lo, hi = sorted((t1, t2))
    for name in ("max_gap_to_reference", "mean_gap_to_reference"):
        a = run(
            study, "confirm", [rule(name, roles=("variant", "comparator"), threshold=lo)], values
        )
        b = run(
            study, "confirm", [rule(name, roles=("variant", "comparator"), threshold=hi)], values
        )
        for cid, verdict in a.judgement.verdicts.items():
            if verdict == "pass":
                assert b.judgement.verdicts[cid] == "pass"


@settings(max_examples=60, deadline=None)
@given(values=pools)
def test_ranks_are_min_ranks(study: Study, values) -> None:  # type: ignore[no-untyped-def]
    ev = run(study, "promote", [rule("keep")], values)
    for cell, ranks in ev.stats.ranks.items():
        for cid, r in ranks.items():
            v = values[cid][synthetic.CELLS.index((cell.stage, cell.seed, cell.host))]
            lower = sum(
                1
                for d in ranks
                if values[d][synthetic.CELLS.index((cell.stage, cell.seed, cell.host))] < v
            )
            assert r == lower + 1


@pytest.mark.parametrize(
    ("observed", "expected"),
    [(0.02, "pass"), (0.02 + 0.5e-9, "pass"), (0.02 + 2e-9, "fail"), (0.0199, "pass")],
)
def test_rule_and_sensitivity_grid_share_one_comparison(
    study: Study, observed: float, expected: str
) -> None:
    # A mean gap of exactly `observed` for cmp: the rule's verdict at threshold 0.02 and the
    # sensitivity grid's verdict at 0.02 must be the same (one tolerance, one comparison).
    values = dict(synthetic.VALUES)
    values["cmp"] = tuple(v + observed for v in values["ref"])  # type: ignore[operator]
    ev = run(
        study,
        "confirm",
        [rule("mean_gap_to_reference", conditions=("cmp",), threshold=0.02)],
        values,
    )
    gap = ev.stats.conditions["cmp"].mean_gap_to_reference
    assert gap is not None and abs(gap - observed) < 1e-12
    assert ev.judgement.verdicts["cmp"] == expected
    assert sweep(gap, (0.02,)).verdicts == (expected,)
