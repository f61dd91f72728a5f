"""Figure data by number: every figure's table (what is drawn) checked against hand-computed
values on the paper06 replay, the half-done synthetic study and hand-made loss curves."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest

from stagewise.gates.results import ConditionConfidence, GateResult, Intervals
from stagewise.ledger import Ledger, RunKey
from stagewise.report.context import ReportContext, collect
from stagewise.report.decision_figures import condition_intervals, host_seed_rows, interval_level
from stagewise.report.figure_base import (
    OKABE_ITO,
    PENDING_COLOR,
    REGISTERED_FIGURES,
    FigureData,
)
from stagewise.report.figure_data import FIGURE_DATA, FIGURE_ORDER
from stagewise.report.figures import render_figures
from stagewise.report.loss_curves import (
    LOSS_LOG,
    UNTIMED_STEPS,
    LossCurve,
    load_curves,
    mean_band,
    read_loss_curve,
    smooth,
)
from stagewise.report.training_figures import learning_curve_rows
from stagewise.study import load_study


def context(root: Path) -> ReportContext:
    study = load_study(root)
    with Ledger.open(study.root) as ledger:
        return collect(study, ledger)


def one(ctx: ReportContext, family: str) -> FigureData:
    result = FIGURE_DATA[family](ctx)
    assert not isinstance(result, str), result
    assert len(result) == 1
    return result[0]


def by(rows: list[dict], **match: object) -> list[dict]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


# --------------------------------------------------------------------------- pure helpers


def test_smooth_is_a_bias_corrected_ema() -> None:
    # beta 0.5: ema 0.5, 1.25, 2.125 over (1 - 0.5^n) = 0.5, 0.75, 0.875
    assert smooth([1.0, 2.0, 3.0], beta=0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert smooth([4.0, 4.0, 4.0]) == pytest.approx([4.0, 4.0, 4.0])


def test_mean_band_on_the_range_every_curve_covers() -> None:
    a = ([0.0, 1.0, 2.0], [4.0, 3.0, 2.0])
    b = ([0.5, 1.5, 2.5], [5.0, 4.0, 3.0])
    band = mean_band([a, b], points=3)
    # grid 0.5 .. 2.0 (latest start, earliest end); a = 3.5, 2.75, 2.0; b = 5.0, 4.25, 3.5
    assert [x for x, *_ in band] == pytest.approx([0.5, 1.25, 2.0])
    assert [m for _, m, _, _ in band] == pytest.approx([4.25, 3.5, 2.75])
    assert [lo for _, _, lo, _ in band] == pytest.approx([3.5, 2.75, 2.0])
    assert [hi for *_, hi in band] == pytest.approx([5.0, 4.25, 3.5])
    # Repeated x (the untimed warm-up steps all at 0 s) keeps the last value there.
    warm = ([0.0, 0.0, 0.0, 1.0], [9.0, 8.0, 6.0, 4.0])
    assert mean_band([warm], points=2) == [(0.0, 6.0, 6.0, 6.0), (1.0, 4.0, 4.0, 4.0)]
    assert mean_band([([0.0, 1.0], [1.0, 1.0]), ([2.0, 3.0], [1.0, 1.0])]) == []


def test_read_loss_curve_derives_seconds_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / LOSS_LOG
    path.write_text(
        "step,progress,loss,lr_multiplier\n0,0.000000,6.0,1.0\n1,0.250000,5.0,1.0\n"
        "2,0.500000,4.5,1.0\n3,0.750000,nan,1.0\n",
        encoding="utf-8",
    )
    curve = read_loss_curve(path, time_budget=8.0, batch_tokens=1024)
    assert curve == LossCurve((0, 1, 2), (6.0, 5.0, 4.5), (0.0, 2.0, 4.0), (1024.0, 2048.0, 3072.0))
    assert read_loss_curve(tmp_path / "absent.csv", time_budget=8.0, batch_tokens=1) is None


def test_token_budget_curve_spreads_the_timed_seconds(tmp_path: Path) -> None:
    path = tmp_path / LOSS_LOG
    rows = [f"{s},{s / 21:.6f},{5.0 - s / 10},1.0" for s in range(21)]
    path.write_text("step,progress,loss,lr_multiplier\n" + "\n".join(rows) + "\n")
    # 21 steps, 22 training seconds, 10 untimed steps: 2 s per timed step after step 10
    curve = read_loss_curve(path, time_budget=None, batch_tokens=100, timed=(22.0, 21, 10))
    assert curve is not None
    assert curve.seconds[:11] == (0.0,) * 11
    assert curve.seconds[15] == pytest.approx(22.0 * 5 / 11)
    assert curve.seconds[20] == pytest.approx(20.0)
    assert curve.tokens[20] == 2100.0


def test_runner_constants_match() -> None:
    from stagewise.runner import loop

    assert LOSS_LOG == loop.LOSS_LOG
    assert UNTIMED_STEPS == loop.MAX_UNTIMED_STEPS


def _with_mean_intervals(
    result: GateResult, bounds: dict[str, tuple[float | None, float | None] | None]
) -> GateResult:
    """`result` whose conditions carry the given intervals of their mean (None: no interval)."""
    conditions = []
    for c in result.conditions:
        pair = bounds.get(c.condition_id)
        interval = None if pair is None else Intervals(0.8, pair, None, None)
        conf = ConditionConfidence(c.condition_id, c.verdict.value, interval, 0.5, False, {}, None)
        conditions.append(dataclasses.replace(c, confidence=conf))
    return dataclasses.replace(result, conditions=tuple(conditions))


def test_condition_intervals_read_the_typed_confidence(paper06: Path) -> None:
    result = context(paper06).gate("g12h").gate_result
    assert result is not None
    ids = [c.condition_id for c in result.conditions]
    typed = _with_mean_intervals(result, {ids[0]: (1.0, 2.0), ids[1]: (None, 1.5), ids[2]: None})
    # A bound the bootstrap left undefined (None) gives no interval to draw.
    assert condition_intervals(typed) == {ids[0]: (1.0, 2.0)}
    assert interval_level(typed) == 0.8
    assert condition_intervals(None) == {} and interval_level(None) is None


# --------------------------------------------------------------------------- paper06


def test_funnel_data_paper06(paper06: Path) -> None:
    data = one(context(paper06), "funnel")
    rows = data.table.rows
    assert [(r["bar"], r["count"]) for r in rows] == [
        ("stage0 (2m)", 3),
        ("stage1a (5m)", 12),
        ("stage1b (10m)", 12),
        ("g10a: promoted (manual)", 9),
        ("stage1c (10m)", 9),
        ("g10: promoted (manual)", 4),
        ("stage2a (1h)", 4),
        ("stage2b (1h)", 4),
        ("g60: promoted (manual)", 3),
        ("stage3 (12h)", 3),
        ("stage3b (12h)", 3),
        ("g12h: passed", 1),
    ]
    assert {r["color"] for r in by(rows, kind="stage")} == {OKABE_ITO[0]}
    assert {r["color"] for r in by(rows, kind="gate")} == {OKABE_ITO[1]}
    assert not any(r["pending"] for r in rows)
    assert "pending" not in data.caption  # nothing is pending: the caption does not say it


def test_gap_trajectory_data_paper06(paper06: Path) -> None:
    data = one(context(paper06), "gap_trajectory")
    rows = data.table.rows
    assert list(dict.fromkeys(r["series"] for r in rows)) == [
        "stage0",
        "stage1a",
        "g10",
        "g60",
        "g12h",
    ]
    greedy = {r["series"]: r for r in by(rows, condition_id="p06_greedy_winner")}
    # recomputed at 12 h: mean 0.951208 - bridge 0.9319145; published at 60 min: 1.004475 - 0.987940
    assert greedy["g12h"]["gap_from_best"] == pytest.approx(0.0192935, abs=1e-6)
    assert greedy["g12h"]["published"] is False
    assert greedy["g60"]["gap_from_best"] == pytest.approx(0.016535, abs=1e-9)
    assert greedy["g60"]["published"] is True
    assert by(rows, series="g10", condition_id="p06_d8_ar48_lr05")[0]["gap_from_best"] == 0.0
    assert "hollow = published" in data.title


def test_host_seed_cells_data_paper06(paper06: Path) -> None:
    ctx = context(paper06)
    data = one(ctx, "host_seed_cells")
    assert data.name == "host_seed_cells_g12h" and data.section == "gate:g12h"
    rows = data.table.rows
    assert len(rows) == 12  # 3 conditions x 2 hosts x 2 seeds
    cells = {}
    with (paper06 / "results" / "stage3_12h.csv").open(newline="") as fh:
        for raw in csv.DictReader(fh):
            cells[(raw["condition_id"], raw["host"], int(raw["seed"]))] = float(raw["val_bpb"])
    for r in rows:
        assert r["val_bpb"] == pytest.approx(cells[(r["condition_id"], r["host"], r["seed"])])
    greedy = by(rows, condition_id="p06_greedy_winner")
    assert sum(r["val_bpb"] for r in greedy) / 4 == pytest.approx(greedy[0]["mean_val_bpb"])
    assert greedy[0]["mean_val_bpb"] == pytest.approx(0.951208, abs=1e-6)
    assert {r["x"] for r in greedy} == {1}
    assert sorted(r["offset"] for r in greedy) == pytest.approx([-0.225, -0.075, 0.075, 0.225])
    assert all(r["reference"] == (r["condition_id"] == "p06_bridge_best") for r in rows)
    assert {r["color"] for r in rows} == set(OKABE_ITO[:4])
    # Decision confidence (the gate result's 90% interval of each mean) as vertical lines.
    typed = ctx.gate("g12h").gate_result
    assert typed is not None
    result = typed.to_json()
    want = {c["condition_id"]: c["interval"]["mean"] for c in result["conditions"]}
    for r in rows:
        assert [r["interval_low"], r["interval_high"]] == want[r["condition_id"]]
        assert r["interval_low"] <= r["mean_val_bpb"] <= r["interval_high"]
    assert "the vertical line its 90% interval" in data.caption


def test_host_seed_rows_carry_intervals_when_the_result_has_them(paper06: Path) -> None:
    ctx = context(paper06)
    view = ctx.gate("g12h")
    result = view.gate_result
    assert result is not None
    view.gate_result = _with_mean_intervals(
        result,
        {
            c.condition_id: (c.mean_val_bpb - 0.001, c.mean_val_bpb + 0.002)
            for c in result.conditions
            if c.mean_val_bpb is not None
        },
    )
    rows = host_seed_rows(ctx, view)
    bridge = by(rows, condition_id="p06_bridge_best")[0]
    assert bridge["interval_low"] == pytest.approx(0.9309145)
    assert bridge["interval_high"] == pytest.approx(0.9339145)


def test_cost_quality_data_paper06(paper06: Path) -> None:
    data = one(context(paper06), "cost_quality")
    rows = data.table.rows
    # tokens: the imported 12-hour cells carry none, so the published 12-hour table gives them
    # (7,275 / 9,428 / 10,090 M): the 12-hour bubbles are the largest, as in the paper's figure
    recomputed = {r["condition_id"]: r for r in by(rows, series="g12h")}
    assert recomputed["p06_bridge_best"]["tokens_M"] == pytest.approx(7275.347968)
    assert recomputed["p06_greedy_winner"]["tokens_M"] == pytest.approx(9428.336640)
    assert recomputed["p06_d8_ar48_lr05"]["tokens_M"] == pytest.approx(10090.119168)
    top = max(rows, key=lambda r: r["tokens_M"] or 0.0)
    assert top["series"] == "g12h" and top["bubble_area"] == pytest.approx(930.0)
    sixty = max(r["bubble_area"] for r in by(rows, series="g60"))
    assert min(r["bubble_area"] for r in recomputed.values()) > sixty
    assert "published/stage3_12h_pooled.csv" in data.caption
    d6 = by(rows, series="g60", condition_id="p06_d6_ar64_lr03")[0]
    assert d6["params_M"] == pytest.approx(26.345772)
    expected = 30 + 900 * math.sqrt(1081.081856 / top["tokens_M"])
    assert d6["bubble_area"] == pytest.approx(expected)
    assert "bubble area" in data.title


def test_budget_data_paper06(paper06: Path) -> None:
    data = one(context(paper06), "budget")
    stages = by(data.table.rows, panel="stage")
    assert [r["label"] for r in stages] == [
        "stage0",
        "stage1a",
        "stage1b",
        "stage1c",
        "stage2a",
        "stage2b",
        "stage3",
        "stage3b",
    ]
    assert [r["budgeted_gpu_hours"] for r in stages] == pytest.approx([0.2, 2, 4, 3, 8, 8, 72, 72])
    assert sum(r["budgeted_gpu_hours"] for r in stages) == pytest.approx(169.2)
    counter = {r["total_gpu_hours"]: r for r in by(data.table.rows, panel="counterfactual")}
    assert sorted(counter) == [144.0, 192.0, 432.0, 576.0]
    assert counter[432.0]["executed_gpu_hours"] == 144.0
    assert counter[432.0]["added_gpu_hours"] == 288.0
    # Imported results carry no training time: the title does not claim a recorded bar.
    assert "no run here recorded its training time" in data.title
    assert "published" not in data.caption


def test_figures_in_the_report_order_whichever_module_is_imported_first() -> None:
    # This module imports decision_figures before figure_data, so the registry is not in
    # report order here; FIGURE_DATA is, and holds every registered family.
    assert list(FIGURE_DATA) == [
        "funnel",
        "gap_trajectory",
        "cost_quality",
        "host_seed_cells",
        "budget",
        "learning_curves",
    ]
    assert tuple(FIGURE_DATA) == FIGURE_ORDER and set(REGISTERED_FIGURES) == set(FIGURE_ORDER)


def test_every_colour_is_okabe_ito(paper06: Path) -> None:
    ctx = context(paper06)
    for family, fn in FIGURE_DATA.items():
        result = fn(ctx)
        if isinstance(result, str):
            continue
        for data in result:
            for row in data.table.rows:
                if "color" in row:
                    assert row["color"] in (*OKABE_ITO, PENDING_COLOR), (family, row)


def test_written_figure_data_equals_the_drawn_rows(paper06: Path, tmp_path: Path) -> None:
    ctx = context(paper06)
    rendered = render_figures(ctx, tmp_path / "figures", names=["budget", "host_seed_cells"])
    names = {f.name for f in rendered}
    assert names == {"budget", "host_seed_cells_g12h"}
    payload = json.loads((tmp_path / "figures" / "budget.json").read_text())
    totals = [r["total_gpu_hours"] for r in payload["rows"] if r["panel"] == "counterfactual"]
    assert sorted(totals) == [144.0, 192.0, 432.0, 576.0]
    with (tmp_path / "figures" / "host_seed_cells_g12h.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {r["gate"] for r in rows} == {"g12h"}
    for fig in rendered:
        assert fig.png is not None and fig.png.stat().st_size > 1000
        assert [p.name for p in fig.data] == [f"{fig.name}.csv", f"{fig.name}.json"]


# --------------------------------------------------------------------------- half-done study


def test_half_done_funnel_and_titles(synthetic: Path) -> None:
    ctx = context(synthetic)
    funnel = one(ctx, "funnel")
    # s2 is pending; its count is the one g1's rules fix (best_k k=1 + the kept reference).
    assert [(r["bar"], r["count"], r["pending"], r["text"]) for r in funnel.table.rows] == [
        ("s1 (4s)", 3, False, "3"),
        ("g1: pending", 0, True, "pending"),
        ("s2 (8s)", 2, True, "2 (pending)"),
    ]
    assert by(funnel.table.rows, bar="g1: pending")[0]["color"] == PENDING_COLOR
    assert "pending" in funnel.caption
    gap = one(ctx, "gap_trajectory")
    assert "hollow" not in gap.title and "published" not in gap.caption  # nothing published
    rows = gap.table.rows
    # g1 pooled cells of s1: c_b mean (1.48+1.47+1.50+1.485)/4 = 1.48375 is the best
    assert by(rows, condition_id="c_b")[0]["gap_from_best"] == 0.0
    assert by(rows, condition_id="c_a")[0]["gap_from_best"] == pytest.approx(
        (1.5 + 1.51 + 1.49 + 1.505) / 4 - 1.48375
    )


def _write_curve(folder: Path, losses: list[float], progress: list[float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["step,progress,loss,lr_multiplier"]
    lines += [
        f"{i},{p:.6f},{v!r},1.0" for i, (p, v) in enumerate(zip(progress, losses, strict=True))
    ]
    (folder / LOSS_LOG).write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_learning_curves_by_number(synthetic: Path) -> None:
    # Two s1 cells of c_a get curves (budget 4 s, batch 4096 tokens); the others stay without.
    runs = synthetic / "runs" / "s1" / "c_a"
    _write_curve(runs / "seed1-block-a" / "out", [4.0, 4.0, 4.0], [0.0, 0.5, 1.0])
    _write_curve(runs / "seed2-block-a" / "out", [6.0, 6.0, 6.0], [0.0, 0.5, 1.0])
    ctx = context(synthetic)
    curves, missing = load_curves(ctx)
    assert set(curves) == {RunKey("s1", "c_a", 1, "block-a"), RunKey("s1", "c_a", 2, "block-a")}
    assert curves[RunKey("s1", "c_a", 1, "block-a")].seconds == (0.0, 2.0, 4.0)
    assert curves[RunKey("s1", "c_a", 1, "block-a")].tokens == (4096.0, 8192.0, 12288.0)
    # 11 succeeded imported runs in all (c_c on block-b seed 2 failed), 2 with curves.
    assert len(missing) == 9
    assert {m.why for m in missing} == {"imported without a loss curve"}
    rows = learning_curve_rows(ctx, "s1", curves)
    secs = by(rows, axis="training_seconds", condition_id="c_a")
    assert len(secs) == 50 and secs[0]["x"] == 0.0 and secs[-1]["x"] == pytest.approx(4.0)
    # constant losses 4 and 6 smooth to themselves: mean 5, band 4..6 everywhere
    assert [r["mean_loss"] for r in secs] == pytest.approx([5.0] * 50)
    assert [r["low_loss"] for r in secs] == pytest.approx([4.0] * 50)
    assert [r["high_loss"] for r in secs] == pytest.approx([6.0] * 50)
    assert {r["cells"] for r in secs} == {2}
    tokens = by(rows, axis="tokens", condition_id="c_a")
    assert tokens[0]["x"] == 4096.0 and tokens[-1]["x"] == pytest.approx(12288.0)
    data = one(ctx, "learning_curves")
    assert data.name == "learning_curves_s1" and data.section == "curves"
    assert "band" in data.caption
