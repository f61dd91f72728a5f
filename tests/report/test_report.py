"""The HTML report: content of the paper06 replay and of a half-done synthetic study."""

from __future__ import annotations

import json
import re
from pathlib import Path

from stagewise.ledger import Ledger
from stagewise.report.html import write_report
from stagewise.report.published import PUBLISHED_LABEL
from tests.conftest import run_cli


def _no_external_refs(page: str) -> None:
    assert "<script" not in page.lower()
    # Every src/href is a data: URI or an in-page anchor: nothing to fetch.
    for ref in re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)['"]""", page):
        assert ref.startswith(("data:", "#")), ref
    assert "http://" not in page and "https://" not in page.replace("arXiv", "")


def test_paper06_report(paper06: Path, tmp_path: Path) -> None:
    out = tmp_path / "R"
    result = write_report(paper06, out)
    page = (out / "report.html").read_text(encoding="utf-8")
    _no_external_refs(page)
    with Ledger.open(paper06) as ledger:
        freeze = ledger.current_freeze("g12h")
        assert freeze is not None
    assert freeze.sha256 in page
    assert freeze.frozen_at in page
    # The 12-hour analysis is recomputed from the cells and matches the published table.
    gate = json.loads((out / "tables" / "gate_g12h.json").read_text())
    rows = {r["condition_id"]: r for r in gate["rows"]}
    assert rows["p06_bridge_best"]["verdict"] == "pass"
    assert rows["p06_greedy_winner"]["verdict"] == "fail"
    assert rows["p06_d8_ar48_lr05"]["verdict"] == "fail"
    assert abs(rows["p06_greedy_winner"]["max_gap_to_reference"] - 0.022927) < 1.5e-6
    assert "recomputed from cells" in page
    # Earlier stages only as published summaries, labelled so.
    assert page.count(PUBLISHED_LABEL) >= 8
    for name in ("stage1c_10min_pooled", "stage2_60min_pooled", "budget"):
        assert (out / "tables" / f"published_{name}.csv").is_file()
        assert f"{name}: {PUBLISHED_LABEL}" in page
    # Manual decisions are flagged, computed ones not.
    assert page.count("badge manual") >= 3
    assert "confirm gate applied to 4 cells" in page
    # Sensitivity, budget (432 counterfactual), agreement.
    assert (out / "tables" / "sensitivity_g12h.csv").is_file()
    budget = (out / "tables" / "budget_counterfactuals.csv").read_text()
    assert "432" in budget and "144" in budget
    assert "Kendall" in (out / "tables" / "agreement.csv").read_text()
    # Every table twice, every figure twice; figures embedded.
    for table in result.tables:
        assert (out / "tables" / f"{table.name}.csv").is_file()
        json.loads((out / "tables" / f"{table.name}.json").read_text())
    drawn = [f for f in result.figures if f.png is not None]
    assert {f.name for f in drawn} == {
        "funnel",
        "gap_trajectory",
        "host_seed_cells",
        "cost_quality",
        "budget",
    }
    for fig in drawn:
        assert (out / "figures" / f"{fig.name}.svg").stat().st_size > 1000
    assert page.count("data:image/png;base64,") == len(drawn)


def test_half_done_report(synthetic: Path, tmp_path: Path) -> None:
    proc = run_cli("report", synthetic, check=True)
    assert "report.html" in proc.stdout
    out = synthetic / "report"
    page = (out / "report.html").read_text(encoding="utf-8")
    _no_external_refs(page)
    assert "What is pending" in page
    assert "rule not frozen yet" in page  # g1 was never frozen
    assert "stage s2: candidates pending" in page
    # The analysis of g1 is shown from the cells even before a decision; c_c is incomplete.
    gate = json.loads((out / "tables" / "gate_g1.json").read_text())
    verdicts = {r["condition_id"]: r["verdict"] for r in gate["rows"]}
    assert verdicts == {"c_a": "promote", "c_b": "promote", "c_c": "incomplete"}
    # Failed runs with their causes.
    failed = (out / "tables" / "failed_runs.csv").read_text()
    assert "diverged: loss NaN at step 12" in failed
    assert "diverged: loss NaN at step 12" in page
    # No published tables in this study, and the page says so.
    assert "ships no published summaries" in page
    # Text is escaped: a label with markup stays text.
    assert "<script" not in page


def test_report_escapes_text(synthetic: Path, tmp_path: Path) -> None:
    matrix = synthetic / "matrix.csv"
    matrix.write_text(matrix.read_text().replace("\nb,c_b,", "\n<b>bold</b>,c_b,"))
    write_report(synthetic, tmp_path / "R")
    page = (tmp_path / "R" / "report.html").read_text()
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<b>bold</b>" not in page


def test_empty_study_renders(tmp_path: Path) -> None:
    run_cli("init", tmp_path / "t", check=True)
    result = write_report(tmp_path / "t", tmp_path / "R")
    page = result.html.read_text()
    skipped = {f.name: f.skipped for f in result.figures if f.skipped}
    assert "host_seed_cells" in skipped and "not drawn" in page
    assert "no results yet for screen" in page


def test_report_flags_a_gate_edited_after_freezing(paper06: Path, tmp_path: Path) -> None:
    study = tmp_path / "p"
    import shutil

    shutil.copytree(paper06, study)
    toml = study / "study.toml"
    toml.write_text(toml.read_text().replace("threshold = 0.010", "threshold = 0.030"))
    page = write_report(study, tmp_path / "R").html.read_text()
    assert "study.toml differs from the frozen rule" in page
