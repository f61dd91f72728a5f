"""Typed gate results: structured reasons, the JSON contract, optional extra fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.gates.decide import gate_result, result_from_runs
from stagewise.gates.evaluate import evaluate_gate
from stagewise.gates.results import CONDITION_KEYS, Reason, Verdict
from stagewise.study import load_study
from stagewise.study.model import Gate, Rule, Study
from stagewise.walk import gate_line
from tests.gates import synthetic


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    return load_study(synthetic.write(Path(tmp_path_factory.mktemp("results")) / "syn"))


def _rule(name: str, reason: str = "", **params: object) -> Rule:
    conditions = params.pop("conditions", ())
    roles = params.pop("roles", ())
    return Rule(name, dict(params), conditions, roles, reason, {"rule": name, **params})  # type: ignore[arg-type]


def _gate(study: Study, kind: str, *rules: Rule) -> Gate:
    return Gate("gX", kind, ("sA", "sB"), tuple(rules))  # type: ignore[arg-type]


def test_reasons_say_which_rule_decided(study: Study) -> None:
    gate = _gate(
        study,
        "promote",
        _rule("best_k", "best mean", k=1),
        _rule("keep", "predeclared comparator", roles=("comparator",)),
    )
    ev = evaluate_gate(study, "gX", synthetic.results(), gate=gate, with_stability=False)
    result = gate_result(ev, freeze=None)
    by_id = {c.condition_id: c for c in result.conditions}
    # cmp is kept by rule 1 only (best_k does not select it): the reason names rule 1.
    cmp = by_id["cmp"].verdict
    assert cmp.value == "promote"
    assert [(r.rule_index, r.rule, r.holds) for r in cmp.decided_by()] == [(1, "keep", True)]
    assert cmp.why() == "predeclared comparator"
    stopped = [c for c in result.conditions if c.verdict.value == "stop"]
    assert stopped and all(c.verdict.decided_by() == () and c.verdict.why() == "" for c in stopped)
    incomplete = by_id["v3"].verdict
    assert incomplete.value == "incomplete" and incomplete.reasons[0].kind == "incomplete"
    # The JSON keeps each reason as its text, in the same order.
    row = next(r for r in result.to_json()["conditions"] if r["condition_id"] == "cmp")
    assert row["reasons"] == [r.text for r in cmp.reasons]
    assert row["reasons"][1].startswith("keep roles=comparator: selected: ")


def test_confirm_fail_is_decided_by_the_failing_rule(study: Study) -> None:
    gate = _gate(
        study,
        "confirm",
        _rule("mean_gap_to_reference", "", roles=("variant",), threshold=0.0001),
    )
    ev = evaluate_gate(study, "gX", synthetic.results(), gate=gate, with_stability=False)
    result = gate_result(ev, freeze=None)
    failed = [c for c in result.conditions if c.verdict.value == "fail"]
    assert failed
    for c in failed:
        (reason,) = c.verdict.decided_by()
        assert reason.holds is False and reason.rule == "mean_gap_to_reference"
        # No declared reason: the rule's description stands in.
        assert c.verdict.why() == "mean_gap_to_reference threshold=0.0001 roles=variant"
    line = gate_line(result)
    assert line.startswith("gate gX (confirm, 6 host-seed cells): ")
    assert "(mean_gap_to_reference threshold=0.0001 roles=variant)" in line


def test_extra_fields_follow_the_contract_keys(study: Study) -> None:
    # Without verdict confidence (issue 13), so the extras below are the only ones.
    result = result_from_runs(study, "gP", synthetic.results(), confidence=None)
    cond = result.conditions[0]
    richer = cond.with_extra(interval=[0.1, 0.2], p_verdict=0.97).with_extra(decisive=True)
    data = richer.to_json()
    assert list(data) == [*CONDITION_KEYS, "interval", "p_verdict", "decisive"]
    assert {k: data[k] for k in CONDITION_KEYS} == cond.to_json()
    with pytest.raises(ValueError, match="contract keys"):
        cond.with_extra(verdict="pass")


def test_validation_names_the_bad_value() -> None:
    with pytest.raises(ValueError, match="but got 'maybe'"):
        Verdict("maybe", ())
    with pytest.raises(ValueError, match="but got 'other'"):
        Reason("other", "x")
    with pytest.raises(ValueError, match="rule index"):
        Reason("rule", "x")


def test_result_json_round_trips_through_json(study: Study) -> None:
    # Non-finite statistics are written as null, so the object is strict JSON.
    result = result_from_runs(study, "gP", synthetic.results())
    text = json.dumps(result.to_json(), allow_nan=False)
    back = json.loads(text)
    assert back["promoted"] == list(result.promoted)
    assert "decision" not in back and "published_comparison" not in back
