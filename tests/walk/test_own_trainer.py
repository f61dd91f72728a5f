"""examples/own_trainer: a user's own PyTorch trainer, run and gated by `stagewise run --freeze`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.executors.conftest import sample_data  # noqa: F401  (the session fixture)
from tests.walk.conftest import run_rows


@pytest.mark.slow
def test_own_trainer_study_runs_and_gates(tmp_path: Path, sample_data: Path) -> None:  # noqa: F811
    folder = tmp_path / "own"
    init = run_cli("init", folder, "--example", "own-trainer", check=True)
    # The closing hint: every step in order, one command a line.
    assert [line.strip() for line in init.stdout.splitlines()[2:]] == [
        f"stagewise data prepare --source sample --out {folder}/data",
        f"stagewise validate {folder}",
        f"stagewise run {folder} --freeze",
        f"stagewise status {folder}",
        f"stagewise report {folder}",
    ]
    (folder / "data").symlink_to(sample_data)
    # Kept small for CI: two of the four recipes, one-second budgets; the rest is the example.
    matrix = (folder / "matrix.csv").read_text().splitlines()
    (folder / "matrix.csv").write_text("\n".join(matrix[:2] + matrix[4:5]) + "\n")
    study = (folder / "study.toml").read_text()
    (folder / "study.toml").write_text(study.replace('"3s"', '"1s"').replace('"6s"', '"1s"'))

    proc = run_cli("run", folder, "--freeze")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = run_rows(folder)
    assert len(rows) == 4 + 4 and {r["status"] for r in rows} == {"succeeded"}
    for row in rows:
        summary = json.loads(row["summary_json"])
        # A byte-level model scores bits per byte: well below 8 (uniform) after any training.
        assert 0 < summary["val_bpb"] < 8
        assert summary["num_steps"] > 0 and summary["total_tokens_M"] > 0
        assert summary["training_seconds"] >= 1.0  # the trainer honoured its wall-clock budget
        # stagewise.result.LossCurveWriter: the loss of every step, beside summary.json.
        curve = (Path(row["log_path"]).parent / "out" / "train_loss.csv").read_text().splitlines()
        assert curve[0] == "step,loss,training_seconds,tokens"
        assert len(curve) - 1 == summary["num_steps"]
    screen = json.loads((folder / "decisions" / "g_screen.json").read_text())
    confirm = json.loads((folder / "decisions" / "g_confirm.json").read_text())
    assert screen["kind"] == "promote" and len(screen["cells"]) == 2
    promoted = {c["condition_id"] for c in screen["conditions"] if c["verdict"] == "promote"}
    assert promoted == {"own_base", "own_hot"}  # the one variant and the kept reference
    assert {r["condition_id"] for r in rows if r["stage"] == "confirm"} == promoted
    verdict = {c["condition_id"]: c["verdict"] for c in confirm["conditions"]}
    assert verdict["own_hot"] in ("pass", "fail")
    gate = run_cli("gate", folder, "g_confirm", "--json")
    assert gate.returncode == 0, gate.stderr
    # The report draws the own trainer's learning curves like the built-in runner's.
    report = run_cli("report", folder, "--out", tmp_path / "rep", check=True)
    assert report.returncode == 0
    curves = json.loads((tmp_path / "rep" / "figures" / "learning_curves_confirm.json").read_text())
    drawn = {r["condition_id"] for r in curves["rows"]}
    assert drawn == promoted  # one band per condition, read from the LossCurveWriter files
