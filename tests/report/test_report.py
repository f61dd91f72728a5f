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
        "host_seed_cells_g12h",
        "cost_quality",
        "budget",
    }
    for fig in drawn:
        assert (out / "figures" / f"{fig.name}.svg").stat().st_size > 1000
        # every figure's numbers are written beside it
        json.loads((out / "figures" / f"{fig.name}.json").read_text())
        assert (out / "figures" / f"{fig.name}.csv").is_file()
        assert f"figures/{fig.name}.csv" in page
    assert page.count("data:image/png;base64,") == len(drawn)
    # Imported runs have no curves: the learning-curve section lists them.
    assert {f.name: f.skipped for f in result.figures}["learning_curves"]
    assert "Runs without a loss curve" in page and "stage3: 6, stage3b: 6" in page


def _text(fragment: str) -> str:
    # Inline spans (ids kept on one line) add no space; block tags do.
    inline = re.sub(r"</?span[^>]*>", "", fragment)
    return " ".join(re.sub(r"<[^>]+>", " ", inline).split())


def test_paper06_outcome_first(paper06: Path, tmp_path: Path) -> None:
    page = write_report(paper06, tmp_path / "R").html.read_text(encoding="utf-8")
    body = page[page.find("<body") :]
    head = _text(body[: body.find("<table")])
    assert (
        "Last decided: gate g12h (confirm, 12h: stage3 + stage3b) passed bridge and failed "
        "greedy and d8/ar48 under its frozen rule" in head
    )
    assert "greedy failed: max_gap_to_reference (threshold = 0.010)" in head
    assert "d8/ar48 failed: mean_gap_to_reference (threshold = 0.020)" in head
    assert "GPU-hours: 169.2 recorded (169.214 as published" in head and "169.2 budgeted" in head
    assert "all 9 of g10 would cost 432 (+288)" in head
    assert "Pending: nothing" in head and "Event chain intact" in head
    with Ledger.open(paper06) as ledger:
        freeze = ledger.current_freeze("g12h")
    assert freeze is not None and freeze.sha256[:16] in head
    # The funnel is the outcome's figure, before any table.
    assert body.find("id='fig-funnel'") < body.find("<table")

    def section(start: str, end: str) -> str:
        return page[page.index(start) : page.index(end)]

    # Each figure sits with its section; each gate has its own host-seed cell figure.
    g12h = section("id='gate-g12h'", "<section id='across'>")
    for piece in ("fig-host_seed_cells_g12h", "t-gate_g12h", "t-sensitivity_g12h", "t-cells_g12h"):
        assert piece in g12h
    assert "Verdicts and reasons" in g12h and "fails: max gap to reference 0.022927" in g12h
    across = section("<section id='across'>", "<section id='curves'>")
    assert "fig-gap_trajectory" in across and "fig-cost_quality" in across
    assert "fig-budget" in section("<section id='budget'>", "<section id='pending'>")
    # Wide tables: key columns open, every column folded; long tables folded whole.
    assert "all 16 columns</summary>" in g12h
    assert "<details><summary>show the table (12 rows)</summary>" in g12h


def test_half_done_report(synthetic: Path, tmp_path: Path) -> None:
    proc = run_cli("report", synthetic, check=True)
    assert "report.html" in proc.stdout
    out = synthetic / "report"
    page = (out / "report.html").read_text(encoding="utf-8")
    _no_external_refs(page)
    assert "What is pending" in page
    assert "No gate has been decided yet; the analysis of g1 is shown below" in _text(page)
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
    assert "learning_curves" in skipped and "No gate has been decided yet." in page
    assert "no results yet for screen" in page


def test_report_flags_a_gate_edited_after_freezing(paper06: Path, tmp_path: Path) -> None:
    study = tmp_path / "p"
    import shutil

    shutil.copytree(paper06, study)
    toml = study / "study.toml"
    toml.write_text(toml.read_text().replace("threshold = 0.010", "threshold = 0.030"))
    page = write_report(study, tmp_path / "R").html.read_text()
    assert "study.toml differs from the frozen rule" in page


def test_learning_curves_section(synthetic: Path, tmp_path: Path) -> None:
    folder = synthetic / "runs" / "s1" / "c_b" / "seed1-block-a" / "out"
    folder.mkdir(parents=True)
    (folder / "train_loss.csv").write_text(
        "step,progress,loss,lr_multiplier\n0,0.0,5.0,1.0\n1,0.5,4.0,1.0\n2,1.0,3.5,1.0\n"
    )
    result = write_report(synthetic, tmp_path / "R")
    page = result.html.read_text()
    curves = page[page.index("<section id='curves'>") : page.index("<section id='budget'>")]
    assert "id='fig-learning_curves_s1'" in curves
    assert "one cell each: no band" in curves
    # the other ten succeeded s1 runs were imported without a curve
    assert "Runs without a loss curve (imported results carry none): s1: 10." in curves
    rows = json.loads((tmp_path / "R" / "figures" / "learning_curves_s1.json").read_text())["rows"]
    assert {r["condition_id"] for r in rows} == {"c_b"} and rows[0]["mean_loss"] == 5.0
