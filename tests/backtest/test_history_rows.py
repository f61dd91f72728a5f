"""How tracker runs become curves rows (`trackers/history.py`), without a tracker: axes,
default levels, merged resumes, safe condition ids, one-line errors; and GPU-hours from a
study's measured throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.backtest.table import CurvesError, build_table
from stagewise.backtest.trackers.history import (
    ImportOptions,
    Point,
    RunHistory,
    rows_from_histories,
    safe_name,
    thin_levels,
)
from tests.backtest.helpers import curve_study
from tests.conftest import run_cli


def run(rid: str, params: dict[str, str], steps: list[int], base: float) -> RunHistory:
    points = tuple(Point(float(s), base + 1.0 / s, 2.0 * s) for s in steps)
    return RunHistory(rid, params, points, None, "test")


def test_tokens_and_seconds_axes_and_default_levels() -> None:
    steps = list(range(10, 1010, 10))  # 100 logged steps: thinned to 8 default levels
    runs = [
        run("r1", {"opt": "adam", "tps": "512"}, steps, 2.0),
        run("r2", {"opt": "sgd", "tps": "512"}, steps, 2.5),
    ]
    by_step = rows_from_histories(runs, ImportOptions("loss", ("opt",)))
    levels = sorted({r.budget for r in by_step.rows})
    assert len(levels) == 8 and levels[-1] == 1000 and levels[0] == 10
    assert levels == list(thin_levels([float(s) for s in steps]))
    tokens = rows_from_histories(
        runs,
        ImportOptions("loss", ("opt",), axis="tokens", tokens_per_step="tps", levels=(5120.0,)),
    )
    assert tokens.unit == "tokens" and {r.budget for r in tokens.rows} == {5120.0}
    assert {r.value for r in tokens.rows if r.condition_id == "adam"} == {2.0 + 1.0 / 10}
    fixed = rows_from_histories(
        runs,
        ImportOptions("loss", ("opt",), axis="tokens", tokens_per_step="100", levels=(1000.0,)),
    )
    assert {r.value for r in fixed.rows if r.condition_id == "sgd"} == {2.5 + 1.0 / 10}
    seconds = rows_from_histories(runs, ImportOptions("loss", ("opt",), axis="seconds"))
    assert seconds.unit == "seconds" and len({r.budget for r in seconds.rows}) == 8
    with pytest.raises(CurvesError, match="--axis tokens needs --tokens-per-step"):
        rows_from_histories(runs, ImportOptions("loss", ("opt",), axis="tokens"))


def test_a_resume_logged_as_a_new_run_is_merged_last_value_wins() -> None:
    first = RunHistory("a", {"opt": "x", "seed": "1"}, (Point(1, 5.0), Point(2, 4.0)), None, "t")
    again = RunHistory("b", {"opt": "x", "seed": "1"}, (Point(2, 3.5), Point(3, 3.0)), None, "t")
    other = run("c", {"opt": "y", "seed": "1"}, [1, 2, 3], 3.0)
    res = rows_from_histories([first, again, other], ImportOptions("m", ("opt",), seed_key="seed"))
    assert res.replaced == 1 and not res.censored
    values = {(r.condition_id, r.budget): r.value for r in res.rows}
    assert values[("x", 2.0)] == 3.5 and values[("x", 3.0)] == 3.0
    table = build_table(res.rows, "mem", unit="steps", metric="m")
    assert table.paired and table.seeds == (1,) and table.curve_kind == "within_run"


def test_condition_ids_are_safe_and_errors_name_the_run_and_key() -> None:
    assert safe_name("adamw") == "adamw"
    odd = safe_name("lr=1e-3 / β2")
    assert odd.startswith("lr-1e-3") and len(odd) <= 64 and odd != safe_name("lr=1e-3 / β3")
    assert len(safe_name("x" * 100)) == 64
    runs = [run("r1", {"opt": "adam"}, [1, 2], 2.0), run("r2", {"optimizer": "sgd"}, [1, 2], 3.0)]
    with pytest.raises(CurvesError) as info:
        rows_from_histories(runs, ImportOptions("m", ("opt",)))
    message = str(info.value)
    assert "run r2 has no param, tag or hparam 'opt'" in message and "\n" not in message
    with pytest.raises(CurvesError, match="--condition-keys: expected"):
        rows_from_histories(runs, ImportOptions("m", ()))


def test_gpu_hours_of_a_steps_table_from_the_study_measured_throughput(tmp_path: Path) -> None:
    study = curve_study(tmp_path / "s", {"a": (1.0, 1.0), "b": (1.1, 0.2)})
    run_cli("run", study, "s1", check=True)  # the fake trainer: 1 s of training, 3 steps
    table = tmp_path / "t.csv"
    table.write_text(
        "condition_id,budget_steps,seed,host,value,metric\n"
        "a,100,r1,h,3.0,loss\nb,100,r2,h,2.9,loss\na,300,r1,h,2.0,loss\nb,300,r2,h,2.2,loss\n"
    )
    proc = run_cli("backtest", table, "--study", study, "--policies", "final_only",
                   "--replays", "5", "--json", check=True)  # fmt: skip
    data = json.loads(proc.stdout)
    assert data["seconds_per_unit"] == pytest.approx(1 / 3)
    assert data["cost_unit"] == "GPU-hours"
    assert data["final_only_gpu_hours"] == pytest.approx(2 * 300 / 3 / 3600)
    plain = json.loads(run_cli("backtest", table, "--policies", "final_only", "--replays", "5",
                               "--json", check=True).stdout)  # fmt: skip
    assert plain["final_only_gpu_hours"] is None and plain["cost_unit"] == "steps"
