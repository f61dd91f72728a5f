"""Tracker histories into curves tables, written by the trackers' own libraries in each test.

MLflow: a SQLite store written with mlflow's API; TensorBoard: event files written with
torch.utils.tensorboard.SummaryWriter (more than 10,000 points to one tag, all read back);
W&B: history exports in W&B's columns. Also the round trip: a stagewise study exported with
`stagewise export` to MLflow and imported back equals `curves --from-study`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from stagewise.backtest.table import read_curves
from tests.backtest.helpers import curve_study
from tests.conftest import run_cli

# MLflow's SQLite store uses a SQLAlchemy loader that SQLAlchemy 2.1 deprecates (their matter).
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
)

FINAL = {"0.01": 3.0, "0.02": 2.9, "0.04": 2.95}
EARLY = {"0.01": 4.0, "0.02": 4.2, "0.04": 3.9}
STEPS = (100, 200, 400, 800)


def value(lr: str, i: int, run: int) -> float:
    f = i / 3
    return EARLY[lr] * (1 - f) + FINAL[lr] * f + 0.001 * run


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_mlflow(uri: str) -> dict[str, str]:
    """3 lrs x 2 runs; one run resumed (step 400 logged twice), one killed after step 400."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("sweep")
    ids: dict[str, str] = {}
    for lr in FINAL:
        for run in (1, 2):
            with mlflow.start_run() as active:
                mlflow.log_params({"lr": lr, "optimizer": "adamw"})
                for i, step in enumerate(STEPS):
                    if lr == "0.04" and run == 2 and step == 800:
                        break  # killed by the sweep: censored after step 400
                    mlflow.log_metric("val/loss", value(lr, i, run), step=step)
                    if lr == "0.01" and run == 1 and step == 400:
                        # resumed from a checkpoint at 200: step 400 logged again, later
                        mlflow.log_metric("val/loss", value(lr, i, run) - 0.5, step=step)
                ids[f"{lr}/{run}"] = active.info.run_id
    return ids


def test_mlflow_history_with_a_resumed_and_a_censored_run(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ids = write_mlflow(uri)
    out = tmp_path / "h.csv"
    proc = run_cli(
        "curves", "--from-mlflow", uri, "--experiment", "sweep", "--metric", "val/loss",
        "--condition-keys", "lr", "--out", out, "--json", check=True,
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    assert summary["replaced_points"] == 1 and summary["censored_runs"] == 1
    assert summary["censored"] == [ids["0.04/2"]]
    assert summary["pairing"] == "unpaired" and summary["budget_unit"] == "steps"
    rows = rows_of(out)
    assert list(rows[0])[:5] == ["condition_id", "budget_steps", "seed", "host", "value"]
    assert {r["metric"] for r in rows} == {"val/loss"} and {r["curve_kind"] for r in rows} == {
        "within_run"
    }
    resumed = next(r for r in rows if r["seed"] == ids["0.01/1"] and r["budget_steps"] == "400")
    assert float(resumed["value"]) == pytest.approx(value("0.01", 2, 1) - 0.5)  # the later one
    killed = [r for r in rows if r["seed"] == ids["0.04/2"]]
    assert [r["budget_steps"] for r in killed] == ["100", "200", "400"]
    assert {r["censored_after"] for r in killed} == {"400"}
    assert all(r["censored_after"] == "" for r in rows if r["seed"] != ids["0.04/2"])
    mapping = rows_of(tmp_path / "h.conditions.csv")
    assert mapping == [{"condition_id": lr, "lr": lr} for lr in sorted(FINAL)]
    table = read_curves(out)
    assert (table.unit, table.metric, table.curve_kind, table.paired) == (
        "steps", "val/loss", "within_run", False,
    )  # fmt: skip
    assert table.censored_runs == 1
    # A back-test: the continue cost model by default; replays that needed the killed run's
    # value at step 800 are unknown, counted and left out.
    bt = run_cli("backtest", out, "--policies", "final_only,sh:eta=3", "--replays", "200",
                 "--json", check=True)  # fmt: skip
    result = json.loads(bt.stdout)
    assert result["cost_model"] == "continue" and result["budget_unit"] == "steps"
    assert result["cost_unit"] == "steps" and result["policies"][0]["gpu_hours"] is None
    final_only = result["policies"][0]
    assert 0 < final_only["unknown_replays"] < 200
    assert any("censored" in w for w in result["warnings"])
    assert final_only["p_retain"] == 1


def test_the_acceptance_sweep_with_a_seed_key_is_paired(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    import mlflow

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("sweep")
    for lr in FINAL:
        for seed in (1, 2):
            with mlflow.start_run():
                mlflow.log_params({"lr": lr, "seed": seed})
                for i, step in enumerate(STEPS):
                    mlflow.log_metric("val/loss", value(lr, i, seed), step=step)
    out = tmp_path / "h.csv"
    run_cli("curves", "--from-mlflow", uri, "--experiment", "sweep", "--metric", "val/loss",
            "--condition-keys", "lr", "--seed-key", "seed", "--out", out, check=True)  # fmt: skip
    table = read_curves(out)
    assert table.paired and table.seeds == (1, 2) and len(table.rows) == 24


def test_tensorboard_runs_every_point_hparams_and_name_pattern(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    from stagewise.backtest.trackers.tensorboard_source import read_tensorboard

    logs = tmp_path / "tb"
    many = 12_000  # more than EventAccumulator's default reservoir of 10,000 per tag
    for opt, run_hex, final in (("adamw", "a1", 2.0), ("adamw", "b2", 2.1), ("sgd", "c3", 2.5)):
        writer = SummaryWriter(log_dir=str(logs / f"{opt}__{run_hex}"))
        n = many if run_hex == "a1" else 400
        for step in range(1, n + 1):
            writer.add_scalar("val/loss", final + 10.0 / step, global_step=step)
        writer.add_hparams({"lr": 0.01 if opt == "adamw" else 0.1, "opt": opt}, {"hp/x": 0.0})
        writer.close()
    runs = read_tensorboard(logs, "val/loss")
    by_id = {r.run_id: r for r in runs}
    assert len(by_id["adamw__a1"].points) == many
    assert [p.step for p in by_id["adamw__a1"].points] == list(range(1, many + 1))
    assert by_id["sgd__c3"].params["lr"] == "0.1" and by_id["sgd__c3"].params["opt"] == "sgd"
    out = tmp_path / "tb.csv"
    proc = run_cli(
        "curves", "--from-tensorboard", logs, "--name-pattern", r"(?P<optimizer>[a-z]+)__(?P<run>[0-9a-f]+)",
        "--metric", "val/loss", "--condition-keys", "optimizer,lr", "--seed-key", "run",
        "--levels", "100,200,400", "--out", out, "--json", check=True,
    )  # fmt: skip
    summary = json.loads(proc.stdout)
    # The 12,000-step run is the longest: the 400-step runs count as stopped early.
    assert summary["censored_runs"] == 2
    table = read_curves(out)
    assert table.conditions == ("adamw_0.01", "sgd_0.1") and table.budgets == (100, 200, 400)
    assert set(table.seeds) == {"a1", "b2", "c3"} and not table.paired
    value_at = {(r.seed, r.budget): r.value for r in table.rows}
    assert value_at[("c3", 200)] == pytest.approx(2.5 + 10.0 / 200)
    bad = run_cli("curves", "--from-tensorboard", logs, "--name-pattern", "(?P<x>zzz)",
                  "--metric", "val/loss", "--condition-keys", "x", "--out", out)  # fmt: skip
    assert bad.returncode == 2 and "does not match" in bad.stderr and "Traceback" not in bad.stderr


def test_wandb_exports_one_file_with_a_run_column_and_one_file_per_run(tmp_path: Path) -> None:
    import pandas as pd

    records = []
    for run, (opt, final) in {
        "r1": ("adam", 2.0),
        "r2": ("adam", 2.05),
        "r3": ("sgd", 2.3),
    }.items():
        for i, step in enumerate((0, 50, 100, 150, 200)):
            records.append({"run_id": run, "_step": step, "_runtime": 10.0 * i,
                            "_timestamp": 1.7e9 + 10 * i, "optimizer": opt,
                            "val_loss": final + 1.0 / (step + 1)})  # fmt: skip
            records.append(
                {
                    "run_id": run,
                    "_step": step,
                    "_runtime": 10.0 * i + 1,
                    "_timestamp": 1.7e9 + 10 * i + 1,
                    "optimizer": opt,
                    "train_loss": 9.0,
                }
            )  # fmt: skip  (a sparse row: no val_loss)
    one = tmp_path / "history.jsonl"
    pd.DataFrame(records).to_json(one, orient="records", lines=True)
    out = tmp_path / "w.csv"
    run_cli("curves", "--from-wandb", one, "--metric", "val_loss", "--condition-keys", "optimizer",
            "--levels", "50,100,200", "--out", out, check=True)  # fmt: skip
    table = read_curves(out)
    assert table.conditions == ("adam", "sgd") and set(table.seeds) == {"r1", "r2", "r3"}
    assert len(table.rows) == 9
    # One Parquet file per run, the config beside it; the wall-clock axis from _runtime.
    folder = tmp_path / "runs"
    folder.mkdir()
    frame = pd.DataFrame(records)
    for run, part in frame.groupby("run_id"):
        part.drop(columns=["run_id", "optimizer"]).to_parquet(folder / f"{run}.parquet")
        opt = part["optimizer"].iloc[0]
        (folder / f"{run}.config.json").write_text(json.dumps({"optimizer": {"value": opt}}))
    out2 = tmp_path / "w2.csv"
    run_cli("curves", "--from-wandb", folder, "--metric", "val_loss", "--condition-keys",
            "optimizer", "--axis", "seconds", "--levels", "10,20,40", "--out", out2,
            check=True)  # fmt: skip
    secs = read_curves(out2)
    assert secs.unit == "seconds" and secs.budgets == (10, 20, 40)
    assert {(r.seed, r.budget): r.value for r in secs.rows}[("r3", 20)] == pytest.approx(
        2.3 + 1.0 / 101
    )


def test_study_exported_to_mlflow_and_imported_back_equals_from_study(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    stages = """[stages.s2]
budget = "2s"
seeds = [1, 2]
hosts = ["block-a"]
candidates = "all"
"""
    study = curve_study(tmp_path / "s", {"ref": (1.0, 1.0), "fast": (1.1, 0.2), "slow": (0.8, 1.2)},
                        gates=stages)  # fmt: skip
    run_cli("run", study, "s1", check=True)
    run_cli("run", study, "s2", check=True)
    direct = tmp_path / "direct.csv"
    run_cli("curves", "--from-study", study, "--out", direct, check=True)
    store = tmp_path / "mlruns"
    run_cli("export", study, "--mlflow", store, check=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    back = tmp_path / "back.csv"
    run_cli(
        "curves", "--from-mlflow", uri, "--experiment", "curvefake", "--metric", "val_bpb",
        "--condition-keys", "condition", "--seed-key", "seed", "--host-key", "host",
        "--budget-key", "time_budget", "--axis", "seconds", "--out", back, check=True,
    )  # fmt: skip
    a, b = read_curves(direct), read_curves(back)

    def cells(t: object) -> set[tuple[str, float, object, str, float]]:
        return {(r.condition_id, r.budget, r.seed, r.host, round(r.value, 9)) for r in t.rows}  # type: ignore[attr-defined]

    assert cells(a) == cells(b) and len(a.rows) == 3 * 1 + 3 * 2
    assert b.curve_kind == "separate_runs" and b.unit == "seconds"
    same = ["backtest", "--policies", "final_only,top_k:k=1", "--replays", "30", "--seed", "4",
            "--json"]  # fmt: skip
    ra = json.loads(run_cli(same[0], direct, *same[1:], check=True).stdout)
    rb = json.loads(run_cli(same[0], back, *same[1:], check=True).stdout)
    assert ra["policies"] == rb["policies"]


def test_an_import_without_the_library_says_which_pip_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from stagewise.backtest.table import CurvesError
    from stagewise.backtest.trackers.mlflow_source import read_mlflow
    from stagewise.backtest.trackers.tensorboard_source import read_tensorboard

    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(CurvesError, match=r"pip install 'stagewise\[mlflow\]'"):
        read_mlflow("sqlite:///x.db", "e", "m")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "events.out.tfevents.1").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorboard.backend.event_processing.event_accumulator", None)
    with pytest.raises(CurvesError, match=r"pip install 'stagewise\[tensorboard\]'"):
        read_tensorboard(tmp_path, "m")
