"""The report's verdict-confidence and variance tables come from the gate result (issue 13)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.gates.decide import result_from_runs
from stagewise.report.tables import (
    CONFIDENCE_COLUMNS,
    VARIANCE_COLUMNS,
    confidence_table_of,
    variance_table_of,
)
from stagewise.study import load_study
from tests.gates import synthetic


def test_tables_hold_the_gate_results_numbers(tmp_path: Path) -> None:
    study = load_study(synthetic.write(tmp_path / "syn"))
    gate = study.gates["gC"]
    result = result_from_runs(study, "gC", synthetic.results())
    obj = result.to_json()
    conf = confidence_table_of(gate, result)
    assert conf is not None and conf.columns == list(CONFIDENCE_COLUMNS)
    by_id = {r["condition_id"]: r for r in conf.rows}
    for cond in obj["conditions"]:
        row = by_id[cond["condition_id"]]
        assert row["p_verdict"] == cond["p_verdict"] and row["decisive"] == cond["decisive"]
        if cond["interval"] is None:  # incomplete: nothing to resample
            assert row["mean_low"] is None
        else:
            assert [row["mean_gap_low"], row["mean_gap_high"]] == cond["interval"]["mean_gap"]
    assert "descriptive, not a significance test" in conf.note
    var = variance_table_of(gate, result)
    assert var is not None and var.columns == list(VARIANCE_COLUMNS)
    pooled = obj["confidence"]["variance"]["pooled"]
    assert var.rows[0]["scope"] == "pooled"
    assert var.rows[0]["sd_host"] == pytest.approx(pooled["sd_host"])
    assert var.rows[0]["df_seed"] == pooled["df_seed"]


def test_no_tables_without_confidence(tmp_path: Path) -> None:
    study = load_study(synthetic.write(tmp_path / "syn"))
    result = result_from_runs(study, "gC", synthetic.results(), confidence=None)
    assert confidence_table_of(study.gates["gC"], result) is None
    assert variance_table_of(study.gates["gC"], result) is None
    assert confidence_table_of(study.gates["gC"], None) is None
