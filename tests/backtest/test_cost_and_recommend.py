"""The cost models, unpaired and within-run tables, honest intervals, the evidence tables,
native Optuna verdicts against Optuna's own pruners, `extrapolate`, and `--recommend`."""

from __future__ import annotations

import json
import random
import tomllib
from pathlib import Path

import numpy as np
import pytest

from stagewise.backtest.draw import draw
from stagewise.backtest.policies import parse_policies
from stagewise.backtest.policies.base import ReplayContext
from stagewise.backtest.recommend import recommend
from stagewise.backtest.replay import backtest, run_costs
from stagewise.backtest.synthetic import SyntheticSpec, synthetic_rows
from stagewise.backtest.table import (
    CurveRow,
    CurvesError,
    build_table,
    read_curves,
    write_curves,
)
from tests.conftest import run_cli


def within_run_table(values: dict[str, list[float]], budgets: list[float], unit: str = "steps"):
    rows = [
        CurveRow(c, b, "run-" + c, "h", v, curve_kind="within_run")
        for c, per in values.items()
        for b, v in zip(budgets, per, strict=True)
    ]
    return build_table(rows, "hand", unit=unit, metric="val_loss")


def test_continue_cost_against_a_hand_computed_cost(tmp_path: Path) -> None:
    # 3 conditions, levels 10/30/90 steps, one run each: sh:eta=3 runs all 3 at 10, the best 1
    # at 30 and 90. continue: 3 x 10 + (30 - 10) + (90 - 30) = 110; restart: 30 + 30 + 90 = 150.
    table = within_run_table({"a": [3.0, 2.5, 2.0], "b": [3.1, 2.6, 2.2], "c": [3.2, 2.7, 2.4]},
                             [10, 30, 90])  # fmt: skip
    policies = parse_policies("final_only,sh:eta=3")
    cont = backtest(table, policies, replays=20, seed=0)
    assert cont.cost_model == "continue" and cont.cost_unit == "steps"
    assert cont.final_only_cost == 3 * 90 and cont.final_only_gpu_hours is None
    assert cont.policies[1].cost == pytest.approx(110.0)
    assert cont.policies[1].cost_vs_final_only == pytest.approx(110 / 270)
    assert cont.policies[1].gpu_hours is None
    restart = backtest(table, policies, replays=20, seed=0, cost_model="restart")
    assert restart.policies[1].cost == pytest.approx(150.0)
    # top_k:k=1 jumps from the first level to the last: under continue the kept run goes on
    # from 10 to 90 steps (3 x 10 + 80 = 110); under restart it is a fresh 90 (30 + 90 = 120).
    top = parse_policies("top_k:k=1")
    assert backtest(table, top, replays=5, seed=0).policies[0].cost == pytest.approx(110.0)
    assert backtest(table, top, replays=5, seed=0, cost_model="restart").policies[
        0
    ].cost == pytest.approx(120.0)
    converted = backtest(table, policies, replays=20, seed=0, seconds_per_unit=0.36)
    assert converted.policies[1].gpu_hours == pytest.approx(110 * 0.36 / 3600)
    path = write_curves(table.rows, tmp_path / "t.csv", unit="steps", metric="val_loss")
    proc = run_cli("backtest", path, "--policies", "final_only,sh:eta=3", "--replays", "20",
                   "--cost", "restart", "--out", tmp_path / "bt", "--json", check=True)  # fmt: skip
    data = json.loads(proc.stdout)
    assert data["cost_model"] == "restart" and data["policies"][1]["cost"] == pytest.approx(150)
    csv_text = (tmp_path / "bt" / "policies.csv").read_text()
    assert "cost_model" in csv_text.splitlines()[0] and ",restart," in csv_text
    bad = run_cli("backtest", path, "--cost", "resume")
    assert bad.returncode == 2 and "--cost: expected restart or continue" in bad.stderr


def test_run_costs_charge_a_later_bracket_from_zero() -> None:
    # One condition: trial A at levels 0 and 1, trial B (a later bracket) starting at level 1
    # and going on to 2. continue: A costs B1 (10 + 20), B costs B2 from zero (40).
    runs = [np.array([[1]]), np.array([[2]]), np.array([[1]])]
    starts = [np.array([[1]]), np.array([[1]]), np.array([[0]])]
    cost = run_costs(runs, starts, (1, 1, 1), (10.0, 30.0, 70.0), "continue")
    assert cost.tolist() == [30.0 + 70.0]
    assert run_costs(runs, starts, (1, 1, 1), (10.0, 30.0, 70.0), "restart").tolist() == [
        10.0 + 60.0 + 70.0
    ]
    # More cells at a later level: the extra cells are new runs from zero.
    two = run_costs([np.array([[1]]), np.array([[1]])], [np.array([[1]]), np.array([[0]])],
                    (1, 3), (10.0, 30.0), "continue")  # fmt: skip
    assert two.tolist() == [10.0 + 1 * 20.0 + 2 * 30.0]


def test_a_table_from_any_row_order_or_format_gives_the_same_result(tmp_path: Path) -> None:
    rows = synthetic_rows(
        SyntheticSpec(conditions=5, budgets=(10.0, 30.0, 90.0, 270.0), seeds=(1, 2, 3))
    )
    shuffled = list(rows)
    random.Random(3).shuffle(shuffled)
    policies = "final_only,sh:eta=2,asha:eta=2,hyperband,optuna-wilcoxon,extrapolate"
    results = []
    for i, table_rows in enumerate((rows, shuffled)):
        for suffix in (".csv", ".parquet"):
            path = write_curves(table_rows, tmp_path / f"t{i}{suffix}")
            table = read_curves(path)
            res = backtest(table, parse_policies(policies), replays=60, seed=5)
            results.append([p.to_json() for p in res.policies])
    assert all(r == results[0] for r in results[1:])


def test_unpaired_string_run_ids_and_within_run_replays_follow_one_run() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for c in range(4):
        for _run in range(3):
            rid = f"{rng.integers(0, 2**32):08x}"
            for b in (100.0, 200.0, 400.0):
                rows.append(CurveRow(f"c{c}", b, rid, "h", 3 + c * 0.1 + 1 / b + rng.normal(0, 0.01),
                                     curve_kind="within_run"))  # fmt: skip
    table = build_table(rows, "runs", unit="steps", metric="val_loss")
    assert not table.paired and table.describe()["pairing"] == "unpaired"
    d = draw(table, 50, seed=1)
    assert d.within_run and d.cells == (1, 1, 1)
    for lv in d.levels[1:]:
        assert np.array_equal(lv.seeds, d.levels[0].seeds)  # the same run at every level
    res = backtest(table, parse_policies("final_only,sh:eta=2"), replays=50, seed=1)
    assert res.to_json()["pairing"] == "unpaired" and res.cost_model == "continue"
    # A paired table read as unpaired on request: each condition draws its own seeds.
    paired_rows = synthetic_rows(SyntheticSpec(conditions=3, budgets=(1.0, 2.0), seeds=(1, 2)))
    assert build_table(paired_rows, "p").paired
    forced = build_table(paired_rows, "p", pairing="unpaired")
    assert not forced.paired and forced.levels[0].n_cells == 4
    d2 = draw(forced, 200, seed=0)
    assert d2.levels[0].seeds.shape == (200, 3, 2)  # [replay, condition, cell]
    with pytest.raises(CurvesError, match="use --pairing auto or unpaired"):
        build_table(table.rows, "runs", unit="steps", pairing="paired")


def test_few_distinct_draws_are_counted_enumerated_and_widen_intervals() -> None:
    rows = synthetic_rows(
        SyntheticSpec(conditions=4, budgets=(1.0, 2.0), seeds=(1, 2), hosts=("h",))
    )
    table = build_table(rows, "few")
    res = backtest(table, parse_policies("final_only,top_k:k=1"), replays=200, seed=0)
    assert res.distinct_draws == 2 and res.draws_enumerated
    assert any("only 2 distinct draws" in w for w in res.warnings)
    top = res.policies[1]
    assert top.p_retain_interval.low == top.p_retain_interval.high == top.p_retain
    # Between "few" and "enough": replays above the distinct draws but not 10x; the interval
    # counts the distinct draws only, so it is wider than one over the replays would be.
    big = synthetic_rows(SyntheticSpec(conditions=4, budgets=(1.0, 2.0, 4.0),
                                       seeds=(1, 2, 3, 4, 5, 6), hosts=("h",), flip=0.5))  # fmt: skip
    table = build_table(big, "mid")
    wide = backtest(table, parse_policies("top_k:k=1"), replays=200, seed=0)
    assert wide.distinct_draws < 200 and not wide.draws_enumerated
    p = wide.policies[0]
    from stagewise.backtest.replay import wilson

    narrow = wilson(p.p_retain * 200, 200)
    assert p.p_retain_interval.high - p.p_retain_interval.low > narrow.high - narrow.low


def test_evidence_tables_decision_accuracy_and_rank_correlation() -> None:
    # Level 1 reverses the final order, level 2 keeps half of the pairs, level 3 is the final.
    table = within_run_table(
        {"a": [4.0, 3.0, 2.0], "b": [3.0, 2.5, 2.1], "c": [2.0, 2.8, 2.2]}, [10, 100, 1000]
    )
    res = backtest(table, parse_policies("final_only"), replays=10, seed=0)
    ev = res.evidence
    assert ev is not None and ev["budget_unit"] == "steps"
    first, middle, last = ev["levels"]
    assert first["decision_accuracy"] == 0 and first["spearman"] == pytest.approx(-1)
    assert first["kendall"] == pytest.approx(-1)
    assert middle["decision_accuracy"] == pytest.approx(1 / 3)
    assert last["decision_accuracy"] == 1 and last["compute_fraction"] == 1
    assert first["compute_fraction"] == pytest.approx(10 / 1000)
    assert [p["cells"] for p in last["by_cells"]] == [1]


def test_native_optuna_verdicts_equal_optunas_own_pruners() -> None:
    pytest.importorskip("optuna")
    for conditions, levels, flip in ((18, 7, 0.5), (9, 5, 0.9)):
        spec = SyntheticSpec(conditions=conditions, budgets=tuple(10.0 * 2**i for i in range(levels)),
                             seeds=(1, 2, 3), hosts=("h",), flip=flip, seed_noise=0.02)  # fmt: skip
        table = build_table(synthetic_rows(spec), "syn")
        ctx = ReplayContext(draw(table, 120, seed=3), seed=3)
        sample = list(range(0, 120, 8))
        text = "optuna-sh:eta=2,optuna-sh:eta=3,optuna-hyperband:eta=2,optuna-hyperband:eta=3,"
        for policy in parse_policies(text + "optuna-wilcoxon:p=0.1,optuna-wilcoxon:p=0.3"):
            native = policy.run(ctx)
            reference = policy.reference_runs(ctx, sample)  # type: ignore[attr-defined]
            for r in sample:
                for lv, (a, b) in enumerate(zip(native, reference, strict=True)):
                    assert (a[r] == b[r]).all(), (policy.label, r, lv)


def test_extrapolate_predicts_like_scipy_curve_fit_and_promotes_by_it() -> None:
    from scipy.optimize import curve_fit

    from stagewise.backtest.policies.extrapolate import predict_final

    budgets = np.array([100.0, 200.0, 400.0, 800.0])
    rng = np.random.default_rng(1)
    for _ in range(4):
        a, b, c = 2 + rng.random(), 0.5 + rng.random(), 0.3 + rng.random()
        y = a + b * (budgets / 100) ** -c + rng.normal(0, 0.002, 4)
        mine = predict_final(budgets, y[None, :], 6400.0)[0]

        def law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
            return a + b * x**-c

        popt, _ = curve_fit(law, budgets / 100, y, p0=(y[-1], y[0] - y[-1], 0.5), maxfev=20000)
        assert mine == pytest.approx(float(law(np.array(64.0), *popt)), abs=0.01)
    # "slow" is worst early but its curve says it ends best; extrapolate:k=1 keeps it.
    b4 = [100.0, 200.0, 400.0, 6400.0]
    curve = {"fast": (2.5, 0.3, 1.0), "slow": (2.0, 1.5, 0.5), "mid": (2.3, 0.6, 0.7)}
    values = {k: [a + b * (x / 100) ** -c for x in b4] for k, (a, b, c) in curve.items()}
    table = within_run_table(values, b4)
    res = backtest(table, parse_policies("extrapolate:k=1,top_k:k=1"), replays=5, seed=0)
    assert res.truth.condition_id == "slow"
    assert res.policies[0].p_retain == 1 and res.policies[1].p_retain == 0


def test_recommend_finds_the_protocol_known_by_construction(tmp_path: Path) -> None:
    # Noise-free, the first level already orders the conditions as the final one does: the
    # cheapest protocol keeping the best is one screen at the first level on one cell, keep 1.
    spec = SyntheticSpec(conditions=8, budgets=(10.0, 40.0, 160.0, 640.0), seeds=(1, 2),
                         hosts=("h",), flip=0.0, seed_noise=0.0, host_noise=0.0)  # fmt: skip
    table = build_table(synthetic_rows(spec), "ordered")
    rec = recommend(table, target=0.9, replays=100, seed=0)
    assert rec.best is not None and rec.candidates >= 100
    assert rec.best.protocol.levels == (0, 3) and rec.best.protocol.keep == (1,)
    assert rec.best.protocol.cells[0] == 1 and rec.best.p_retain == 1
    expected = (8 * 1 * 10 + 1 * 2 * 640) / (8 * 2 * 640)
    assert rec.best.cost_ratio == pytest.approx(expected)
    assert len(rec.runners_up) == 2
    assert all(r.cost >= rec.best.cost for r in rec.runners_up)
    # Reversed early order: only protocols that never screen at an early level keep the best.
    flipped = build_table(synthetic_rows(SyntheticSpec(**{**spec.__dict__, "flip": 1.0})), "rev")
    rev = recommend(flipped, target=0.9, replays=100, seed=0, max_cost_ratio=0.5)
    assert rev.best is None or 0 not in rev.best.protocol.levels[:-1]


def test_recommend_cli_writes_a_study_fragment_validate_accepts(tmp_path: Path) -> None:
    spec = SyntheticSpec(conditions=6, budgets=(10.0, 30.0, 90.0, 270.0), seeds=(1, 2, 3),
                         hosts=("h1",), flip=0.1)  # fmt: skip
    curves = write_curves(synthetic_rows(spec), tmp_path / "c.csv")
    rec_toml = tmp_path / "rec.toml"
    proc = run_cli("backtest", curves, "--recommend", "--target-retain", "0.9", "--replays", "200",
                   "--policies", "final_only,sh:eta=2", "--out-study", rec_toml,
                   "--out", tmp_path / "bt", check=True)  # fmt: skip
    assert "recommended (" in proc.stdout
    text = rec_toml.read_text()
    assert "sha256 " in text and "runner-up 1:" in text and "p_retain" in text
    fragment = tomllib.loads(text)
    assert fragment["stages"] and fragment["gates"]
    stored = json.loads((tmp_path / "bt" / "backtest.json").read_text())
    assert stored["recommendation"]["found"] and stored["recommendation"]["recommended"]
    pareto = (tmp_path / "bt" / "pareto.csv").read_text()
    assert "recommended" in pareto
    study = tmp_path / "s"
    study.mkdir()
    matrix = ["label,condition_id,role"] + [
        f"syn{i:02d},syn{i:02d},{'reference' if i == 0 else 'variant'}" for i in range(6)
    ]
    (study / "matrix.csv").write_text("\n".join(matrix) + "\n")
    (study / "study.toml").write_text(
        '[study]\nname = "rec"\nreference = "syn00"\nmatrix = "matrix.csv"\n'
        '[hosts.h1]\nexecutor = "local"\ndevices = ["cpu"]\nworkers = 1\n' + text
    )
    run_cli("validate", study, check=True)
    # Nothing reaches the target under a tiny cost cap: said, and no file written.
    none = tmp_path / "none.toml"
    miss = run_cli("backtest", curves, "--recommend", "--max-cost-ratio", "0.001",
                   "--replays", "50", "--policies", "final_only", "--out-study", none)  # fmt: skip
    assert miss.returncode == 1 and not none.exists()
    assert "no protocol among" in miss.stdout


def test_plain_progress_lines_and_labelled_figures(tmp_path: Path) -> None:
    from stagewise.backtest.figure import POLICY_COLOURS, pareto_points, policy_colour

    spec = SyntheticSpec(conditions=5, budgets=(10.0, 30.0, 90.0), seeds=(1, 2))
    curves = write_curves(synthetic_rows(spec), tmp_path / "c.csv")
    proc = run_cli("backtest", curves, "--replays", "30", "--out", tmp_path / "bt", check=True)
    assert "replays: 0/" in proc.stderr and "(100%)" in proc.stderr  # stderr is a pipe here
    assert "skipped extrapolate:k=3;levels=3: extrapolate:levels=3 needs at least 4" in proc.stderr
    defaults = [k for k in POLICY_COLOURS if k != "recommended"]
    assert len({POLICY_COLOURS[k] for k in defaults}) == len(defaults)  # no shared colours
    assert policy_colour("sh:eta=7") == policy_colour("sh:eta=7")
    table = read_curves(curves)
    res = backtest(table, parse_policies("final_only,sh:eta=2"), replays=10, seed=0)
    points = pareto_points(res)
    assert {p.colour for p in points} == {POLICY_COLOURS["final_only"], POLICY_COLOURS["sh:eta=2"]}
    assert {p.cost_unit for p in points} == {"GPU-hours"}
    assert (tmp_path / "bt" / "decision_accuracy.png").is_file()
