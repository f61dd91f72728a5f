"""The report's "Back-test" section, from a result stored in a study's backtest/ folder."""

from __future__ import annotations

from pathlib import Path

from stagewise.backtest.output import write_result
from stagewise.backtest.policies import parse_policies
from stagewise.backtest.replay import backtest
from stagewise.backtest.report import backtest_sections, section_data
from tests.backtest.helpers import table_from


def test_section_names_the_cheapest_policy_that_keeps_the_best(tmp_path: Path) -> None:
    assert backtest_sections(tmp_path) == []
    # d wins at the end and is second at 10 s: top_k:k=2 keeps it (4 x 10 + 2 x 90 = 220 s)
    # and so does sh:eta=2 (a, d at 30 s, then d: 4 x 10 + 2 x 30 + 90 = 190 s, the cheapest).
    values = {
        "a": [1.0, 0.9, 0.8],
        "b": [1.1, 0.8, 0.7],
        "c": [1.2, 0.7, 0.6],
        "d": [1.05, 0.6, 0.5],
    }
    table = table_from(values, [10.0, 30.0, 90.0])
    result = backtest(table, parse_policies("final_only,top_k:k=2,sh:eta=2"), replays=5)
    write_result(result, tmp_path / "backtest")
    data = section_data(tmp_path)
    assert data is not None and data.problem is None
    assert data.truth["condition_id"] == "d"
    assert data.cheapest is not None and data.cheapest["label"] == "sh:eta=2"
    ((section_id, title, body),) = backtest_sections(tmp_path)
    assert (section_id, title) == ("backtest", "Back-test")
    assert "Cheapest policy with p_retain &ge; 0.9: <b>sh:eta=2</b>" in body
    assert "data:image/png;base64," in body and body.count("<tr>") == 4


def test_an_unreadable_result_is_named_not_raised(tmp_path: Path) -> None:
    (tmp_path / "backtest").mkdir()
    (tmp_path / "backtest" / "backtest.json").write_text("{not json")
    ((_, _, body),) = backtest_sections(tmp_path)
    assert "cannot be read: backtest/backtest.json" in body


def test_stagewise_report_shows_the_back_test_section(tmp_path: Path) -> None:
    from stagewise.ledger import Ledger
    from tests.conftest import run_cli, write_study

    study = write_study(tmp_path / "study")
    Ledger.open(study).close()
    table = table_from({"c_a": [1.0, 0.9], "c_b": [1.1, 0.8], "c_c": [1.2, 0.7]}, [4.0, 8.0])
    write_result(
        backtest(table, parse_policies("final_only,sh:eta=2"), replays=5), study / "backtest"
    )
    run_cli("report", study, "--out", tmp_path / "rep", check=True)
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Back-test</h2>" in page and "Truth: <b>c_c</b>" in page
