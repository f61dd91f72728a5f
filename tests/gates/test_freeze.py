"""Freeze chain: canonical records, no-op refreeze, tamper refusal, amendments, post hoc."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.errors import DecisionError, FrozenRuleMismatch
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import changes_since_freeze, freeze, require_frozen
from stagewise.ledger import Ledger, canonical_json, sha256_text
from stagewise.study import load_study
from tests.gates import synthetic


def _import(folder: Path) -> None:
    from stagewise.executors.external import import_results

    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        import_results(study, ledger, [folder / "results.csv"])


def test_freeze_records_canonical_hash_and_refreeze_is_noop(tmp_path: Path) -> None:
    folder = synthetic.write(tmp_path / "s")
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        first = freeze(study, ledger, "gP")
        assert first.created and first.record.kind == "freeze" and not first.record.post_hoc
        assert first.record.sha256 == sha256_text(first.record.canonical)
        content = json.loads(first.record.canonical)
        assert content["frozen"]["definition"] == study.gates["gP"].raw
        assert content["frozen_sha256"] == sha256_text(canonical_json(content["frozen"]))
        assert content["plan"] == {"sA": list(study.condition_ids), "sB": list(study.condition_ids)}
        assert content["previous_sha256"] is None
        again = freeze(study, ledger, "gP")
        assert not again.created and again.record.id == first.record.id
        second = freeze(study, ledger, "gC")
        # the freezes form a chain: each names the previous record's hash
        assert json.loads(second.record.canonical)["previous_sha256"] == first.record.sha256
        assert [e.kind for e in ledger.events() if e.kind.startswith("gate.")] == [
            "gate.freeze",
            "gate.freeze",
        ]
        assert ledger.verify_chain() == []
        assert require_frozen(study, ledger, "gP").id == first.record.id


def test_tamper_after_freeze_is_refused_until_amended(tmp_path: Path) -> None:
    folder = synthetic.write(tmp_path / "s")
    with Ledger.open(folder) as ledger:
        freeze(load_study(folder), ledger, "gC")
    toml = folder / "study.toml"
    toml.write_text(toml.read_text().replace("threshold = 0.02 }", "threshold = 0.05 }", 1))
    study = load_study(folder)
    _import(folder)
    with Ledger.open(folder) as ledger:
        assert changes_since_freeze(study, ledger, "gC")
        with pytest.raises(FrozenRuleMismatch, match="--amend --reason"):
            require_frozen(study, ledger, "gC")
        with pytest.raises(FrozenRuleMismatch, match=r"0\.02 -> 0\.05"):
            apply_gate(study, ledger, "gC")
        with pytest.raises(FrozenRuleMismatch, match="amendment"):
            freeze(study, ledger, "gC")
        with pytest.raises(FrozenRuleMismatch, match="needs a reason"):
            freeze(study, ledger, "gC", amend=True)
        assert ledger.decisions("gC") == []
        amended = freeze(study, ledger, "gC", reason="looser max gap", amend=True)
        assert amended.record.kind == "amend" and amended.record.post_hoc
        assert len(amended.record.results_at_freeze) == 29
        content = json.loads(amended.record.canonical)
        assert content["amends"] == ledger.freezes("gC")[0].sha256
        result = apply_gate(study, ledger, "gC")
        assert result.decision.frozen_sha256 == amended.record.sha256
        kinds = [a["kind"] for a in result.object["amendments"]]
        assert kinds == ["freeze", "amend"]
        assert result.object["amendments"][1]["reason"] == "looser max gap"
        assert "looser max gap" in (folder / "decisions" / "gC.md").read_text()
        events = [e for e in ledger.events() if e.kind == "gate.amend"]
        assert events and events[0].payload["reason"] == "looser max gap"


def test_matrix_role_change_counts_as_an_edit(tmp_path: Path) -> None:
    folder = synthetic.write(tmp_path / "s")
    with Ledger.open(folder) as ledger:
        freeze(load_study(folder), ledger, "gC")
    matrix = folder / "matrix.csv"
    matrix.write_text(matrix.read_text().replace("v2,v2,variant", "v2,v2,control"))
    with Ledger.open(folder) as ledger, pytest.raises(FrozenRuleMismatch, match="targets"):
        require_frozen(load_study(folder), ledger, "gC")


def test_unfrozen_gate_and_nothing_to_amend(tmp_path: Path) -> None:
    folder = synthetic.write(tmp_path / "s")
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        with pytest.raises(FrozenRuleMismatch, match="not frozen"):
            apply_gate(study, ledger, "gP")
        with pytest.raises(FrozenRuleMismatch, match="nothing to amend"):
            freeze(study, ledger, "gP", reason="x", amend=True)
        with pytest.raises(FrozenRuleMismatch, match="unknown gate"):
            freeze(study, ledger, "nope")


def test_no_results_is_refused_and_manual_decision_blocks(tmp_path: Path) -> None:
    from stagewise.gates.manual import decide_manually, withdraw

    folder = synthetic.write(tmp_path / "s")
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        freeze(study, ledger, "gP")
        with pytest.raises(DecisionError, match="no complete condition"):
            apply_gate(study, ledger, "gP")
        decide_manually(study, ledger, "gP", ["v1"], reason="judgement")
        with pytest.raises(DecisionError, match="--withdraw"):
            apply_gate(study, ledger, "gP")
    _import(folder)
    with Ledger.open(folder) as ledger:
        withdraw(ledger, study, "gP", "recompute")
        result = apply_gate(study, ledger, "gP")
        assert result.promoted == ("ref", "cmp", "v1")
        assert result.object["manual"][0]["withdrawn_at"]
        assert ledger.active_decision("gP").kind == "computed"  # type: ignore[union-attr]
