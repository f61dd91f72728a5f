"""`stagewise export --mlflow`: the pure mapping of runs to MLflow runs, and the real CLI into a
local SQLite store read back with MlflowClient (every run once, metrics and curve; a second
export changes nothing; new results update in place)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stagewise.export.mlflow import (
    CURVE_MAX_POINTS,
    RUN_KEY_TAG,
    desired_runs,
    export_mlflow,
    thin,
    tracking_uri,
)
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import freeze
from stagewise.ledger import Ledger, RunKey
from stagewise.report.context import collect
from stagewise.report.loss_curves import LossCurve, load_curves
from stagewise.study import load_study
from tests.conftest import run_cli

# sqlalchemy 2.1 deprecates a loader option MLflow's SQL store still uses (third party).
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
)

CURVE = "step,progress,loss,lr_multiplier\n0,0.0,5.0,1.0\n1,0.5,4.0,1.0\n2,1.0,3.5,1.0\n"


def _desired(root: Path) -> dict[str, Any]:
    study = load_study(root)
    with Ledger.open(study.root) as ledger:
        ctx = collect(study, ledger)
    curves, _ = load_curves(ctx)
    return {r.key: r for r in desired_runs(ctx, curves)}


def test_desired_runs_of_a_half_done_study(synthetic: Path) -> None:
    curve_dir = synthetic / "runs" / "s1" / "c_b" / "seed1-block-a" / "out"
    curve_dir.mkdir(parents=True)
    (curve_dir / "train_loss.csv").write_text(CURVE)
    runs = _desired(synthetic)
    assert len(runs) == 13  # 12 imported s1 cells + one locally driven s2 run
    ok = runs["s1/c_b/1/block-a"]
    assert ok.status == "FINISHED" and ok.metrics["val_bpb"] == 1.48
    assert ok.metrics["training_seconds"] == 4.0 and ok.metrics["total_tokens_M"] == 1.6
    assert ok.curve == ((0, 5.0), (1, 4.0), (2, 3.5))
    assert ok.params["depth"] == "2" and ok.params["aspect_ratio"] == "48"
    assert ok.params["time_budget"] == "4" and "data" not in ok.params
    assert ok.tags["stage"] == "s1" and ok.tags["condition"] == "c_b" and ok.tags["seed"] == "1"
    assert ok.tags["host"] == "block-a" and ok.tags["role"] == "comparator"
    assert ok.tags["gate"] == "g1" and ok.tags["gate_decision"] == "pending"
    assert ok.tags[RUN_KEY_TAG] == "s1/c_b/1/block-a" and ok.tags["status"] == "succeeded"
    failed = runs["s1/c_c/2/block-b"]
    assert failed.status == "FAILED" and "val_bpb" not in failed.metrics
    assert failed.tags["cause"] == "diverged: loss NaN at step 12" and failed.curve == ()
    assert runs["s2/c_a/3/block-a"].tags.get("gate") is None  # no gate pools s2


def test_thin_keeps_the_shape_and_the_last_step() -> None:
    n = 12_345
    curve = LossCurve(tuple(range(n)), tuple(float(i) for i in range(n)), (0.0,) * n, (0.0,) * n)
    points = thin(curve)
    assert len(points) <= CURVE_MAX_POINTS + 1
    assert points[0] == (0, 0.0) and points[-1] == (n - 1, float(n - 1))
    assert [s for s, _ in points[:3]] == [0, 3, 6]  # stride ceil(12345 / 5000) = 3


def test_tracking_uri(tmp_path: Path) -> None:
    assert tracking_uri("http://localhost:5000") == "http://localhost:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking_uri(str(tmp_path / "store")) == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert (tmp_path / "store").is_dir()
    assert tracking_uri(str(tmp_path / "a.db")) == f"sqlite:///{tmp_path / 'a.db'}"


def _export(study: Path, store: Path) -> dict[str, Any]:
    proc = run_cli("export", study, "--mlflow", store, "--json", check=True)
    return dict(json.loads(proc.stdout))


def _read_back(store: Path) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(str(store)))
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    out: dict[str, Any] = {}
    for run in runs:
        key = run.data.tags[RUN_KEY_TAG]
        assert key not in out, f"{key} exported twice"
        history = client.get_metric_history(run.info.run_id, "train_loss")
        out[key] = (run, sorted((m.step, m.value) for m in history))
    return out


def test_export_cli_into_a_local_store(synthetic: Path, tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    curve_dir = synthetic / "runs" / "s1" / "c_b" / "seed1-block-a" / "out"
    curve_dir.mkdir(parents=True)
    (curve_dir / "train_loss.csv").write_text(CURVE)
    store = tmp_path / "mlruns"

    first = _export(synthetic, store)
    assert (first["runs"], first["created"], first["updated"], first["unchanged"]) == (13, 13, 0, 0)
    assert first["curves"] == 1 and first["experiment"] == "tiny"
    runs = _read_back(store)
    assert len(runs) == 13
    with Ledger.open(synthetic) as ledger:
        records = {r.key: r for r in ledger.runs()}
    for key, (run, _) in runs.items():
        stage, cond, seed, host = key.split("/")
        rec = records[RunKey(stage, cond, int(seed), host)]
        assert run.data.tags["status"] == rec.status
        if rec.val_bpb is not None:
            assert run.data.metrics["val_bpb"] == rec.val_bpb
            assert run.info.status == "FINISHED"
    run, curve = runs["s1/c_b/1/block-a"]
    assert curve == [(0, 5.0), (1, 4.0), (2, 3.5)]
    assert run.data.params["matrix_lr"] == "0.04"
    assert runs["s1/c_c/2/block-b"][0].info.status == "FAILED"
    ids = {k: r.info.run_id for k, (r, _) in runs.items()}

    # A second export of the unchanged study writes nothing.
    second = export_mlflow(synthetic, str(store)).to_json()
    assert (second["created"], second["updated"], second["unchanged"]) == (0, 0, 13)
    again = _read_back(store)
    assert {k: r.info.run_id for k, (r, _) in again.items()} == ids
    assert again["s1/c_b/1/block-a"][1] == curve

    # A decision changes the gate's word on each s1 run: updated in place, never duplicated.
    study = load_study(synthetic)
    with Ledger.open(study.root) as ledger:
        freeze(study, ledger, "g1")
        apply_gate(study, ledger, "g1")
    third = export_mlflow(synthetic, str(store)).to_json()
    final = _read_back(store)
    assert {k: r.info.run_id for k, (r, _) in final.items()} == ids
    assert third["updated"] == 12 and third["created"] == 0
    assert final["s1/c_b/1/block-a"][0].data.tags["gate_decision"] == "promote"
    assert final["s1/c_c/1/block-a"][0].data.tags["gate_decision"] == "stop"


def test_export_without_mlflow_names_the_extra(synthetic: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mlflow'] = None; sys.modules['mlflow.tracking'] = None\n"
        "from stagewise.cli.app import main\n"
        f"sys.argv = ['stagewise', 'export', {str(synthetic)!r}, '--mlflow', "
        f"{str(tmp_path / 's')!r}]\nmain()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --mlflow needs the MLflow extra: pip install 'stagewise[mlflow]'"
    ]


def test_export_of_a_missing_study_is_one_line_and_writes_no_store(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    proc = run_cli("export", tmp_path / "nope", "--mlflow", tmp_path / "store")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope" in proc.stderr
    assert not (tmp_path / "store").exists()
