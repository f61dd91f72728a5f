"""The synthetic study checked against values computed by hand (see synthetic.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy import stats as sps

from stagewise.gates.evaluate import evaluate_gate
from stagewise.study import load_study
from tests.conftest import run_cli
from tests.gates import synthetic

APPROX = 1e-12


@pytest.fixture
def study(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_study(synthetic.write(tmp_path / "syn"))


def by_id(ev):  # type: ignore[no-untyped-def]
    return ev.stats.conditions


def test_cells_completeness_and_incomplete(study) -> None:  # type: ignore[no-untyped-def]
    ev = evaluate_gate(study, "gP", synthetic.results())
    assert [(c.stage, c.seed, c.host) for c in ev.cells] == list(synthetic.CELLS)
    assert ev.pool.complete == ("ref", "cmp", "v1", "v2")
    assert [(c.host, c.seed) for c in ev.pool.missing["v3"]] == [("h3", 2)]
    assert ev.judgement.verdicts["v3"] == "incomplete"


def test_ranks_with_ties_share_the_lowest(study) -> None:  # type: ignore[no-untyped-def]
    ev = evaluate_gate(study, "gP", synthetic.results())
    ranks = [ev.stats.ranks[c] for c in ev.cells]
    assert [r["ref"] for r in ranks] == [2, 1, 1, 2, 2, 2]
    assert [r["cmp"] for r in ranks] == [3, 1, 3, 4, 1, 3]
    assert [r["v1"] for r in ranks] == [1, 3, 1, 1, 3, 1]
    assert [r["v2"] for r in ranks] == [4, 4, 4, 3, 4, 4]
    s = by_id(ev)
    assert s["ref"].mean_rank == pytest.approx(10 / 6)
    assert (s["cmp"].best_rank, s["cmp"].worst_rank, s["cmp"].first_rank_cells) == (1, 4, 2)
    assert s["v1"].first_rank_cells == 4
    assert s["v3"].mean_rank is None


def test_means_sd_gaps_by_hand(study) -> None:  # type: ignore[no-untyped-def]
    s = by_id(evaluate_gate(study, "gP", synthetic.results()))
    assert s["ref"].mean_val_bpb == pytest.approx(1.025, abs=APPROX)
    assert s["ref"].sd_val_bpb == pytest.approx(math.sqrt(3.5e-4), abs=APPROX)
    assert s["v1"].gap_from_best == 0.0
    assert s["cmp"].gap_from_best == pytest.approx(6.19 / 6 - 6.14 / 6, abs=APPROX)
    assert s["cmp"].mean_gap_to_reference == pytest.approx(0.04 / 6, abs=APPROX)
    assert s["cmp"].max_gap_to_reference == pytest.approx(0.02, abs=APPROX)
    assert s["v1"].mean_gap_to_reference == pytest.approx(-0.01 / 6, abs=APPROX)
    assert s["v2"].max_gap_to_reference == pytest.approx(0.03, abs=APPROX)
    # params from depth/aspect (no num_params_M in the results); tokens and hours summed
    assert s["ref"].params_M is not None and s["v1"].params_M is not None
    assert s["v1"].params_M > s["ref"].params_M
    assert s["ref"].tokens_M == pytest.approx(60.0)
    assert s["ref"].training_hours == pytest.approx(1.0)
    assert s["v3"].n_cells == 5 and s["v3"].gap_from_best is None


def test_promote_gate_by_hand(study) -> None:  # type: ignore[no-untyped-def]
    ev = evaluate_gate(study, "gP", synthetic.results())
    v = ev.judgement.verdicts
    assert v == {
        "ref": "promote",
        "cmp": "promote",
        "v1": "promote",
        "v2": "stop",
        "v3": "incomplete",
    }
    assert ev.promoted == ("ref", "cmp", "v1")


def test_confirm_gate_by_hand(study) -> None:  # type: ignore[no-untyped-def]
    ev = evaluate_gate(study, "gC", synthetic.results())
    v = ev.judgement.verdicts
    # v1: rank 1 in only 4/6 cells -> fails although its mean gap holds
    # cmp: max gap 0.02 <= 0.02 (inclusive); v2: mean gap 0.02 <= 0.02 (inclusive)
    assert v == {"ref": "untested", "cmp": "pass", "v1": "fail", "v2": "pass", "v3": "incomplete"}
    assert ev.promoted == ("cmp", "v2")
    assert any("4/6" in r.text for r in ev.judgement.reasons["v1"])


def test_agreement_by_hand(study) -> None:  # type: ignore[no-untyped-def]
    ev = evaluate_gate(study, "gP", synthetic.results())
    # average ranks per cell -> rank sums ref 11, cmp 15.5, v1 10.5, v2 23; S = 100.5;
    # ties: one pair in two cells -> sum(t^3 - t) = 12; W = 12 S / (m^2 (n^3 - n) - m T)
    assert ev.kendalls_w == pytest.approx(12 * 100.5 / (36 * 60 - 6 * 12), abs=APPROX)
    pairs = {(p.host_a, p.host_b): p for p in ev.host_pairs}
    assert set(pairs) == {("h1", "h2"), ("h1", "h3"), ("h2", "h3")}
    h1 = [2.0, 3.5, 1.0, 3.5]  # mean min-ranks of ref, cmp, v1, v2 on h1
    h2 = [1.5, 1.0, 3.0, 4.0]
    assert pairs[("h1", "h2")].kendall_tau == pytest.approx(sps.kendalltau(h1, h2).statistic)
    assert pairs[("h1", "h2")].spearman_rho == pytest.approx(sps.spearmanr(h1, h2).statistic)
    assert len(ev.stability) == 6


def test_cli_end_to_end(tmp_path: Path) -> None:
    folder = synthetic.write(tmp_path / "syn")
    run_cli("freeze", folder, "gP", check=True)
    run_cli("freeze", folder, "gC", check=True)
    run_cli("import", folder, folder / "results.csv", check=True)
    out = run_cli("gate", folder, "gP", "--json", check=True)
    g = json.loads(out.stdout)
    assert g["promoted"] == ["ref", "cmp", "v1"]
    assert g["incomplete"] == [{"condition_id": "v3", "missing": [{"host": "h3", "seed": 2}]}]
    assert len(g["cells"]) == 6
    conf = json.loads(run_cli("gate", folder, "gC", "--json", check=True).stdout)
    assert {c["condition_id"]: c["verdict"] for c in conf["conditions"]}["v1"] == "fail"
    for suffix in ("json", "csv", "md"):
        assert (folder / "decisions" / f"gP.{suffix}").is_file()
    assert json.loads((folder / "decisions" / "gC.json").read_text()) == conf
    budget = json.loads(run_cli("budget", folder, "--json", check=True).stdout)
    # 5 candidates x 1 seed x 3 hosts x 1/6 h = 2.5 per stage; 30 runs x 600 s recorded... minus v3's gap
    assert budget["total_budgeted_gpu_hours"] == pytest.approx(5.0)
    assert budget["total_recorded_gpu_hours"] == pytest.approx(29 * 600 / 3600)
