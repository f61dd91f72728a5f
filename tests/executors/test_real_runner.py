"""A small stage of real `stagewise train` CPU runs on two local workers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import TINY_RUNNER
from tests.executors.conftest import events, run_cli, runs, with_ledger

MATRIX = """\
label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size
a,c_a,reference,2,32,0.04,4096
c,c_c,variant,1,64,0.05,4096
"""

STUDY = (
    """\
[study]
name = "tiny"
reference = "c_a"
matrix = "matrix.csv"
"""
    + TINY_RUNNER
    + """\
[hosts.block-a]
executor = "local"
devices = ["cpu"]
workers = 1
[hosts.block-b]
executor = "local"
devices = ["cpu"]
workers = 1
[stages.s1]
budget = "4s"
seeds = [1]
hosts = ["block-a", "block-b"]
candidates = "all"
"""
)


def test_real_runner_stage_on_two_cpu_workers(tmp_path: Path, sample_data: Path) -> None:
    study = tmp_path / "s"
    study.mkdir()
    (study / "matrix.csv").write_text(MATRIX)
    (study / "study.toml").write_text(STUDY.replace("{data}", str(sample_data)))
    with_ledger(study)
    proc = run_cli("run", study, "s1", "--workers", "2", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["succeeded"]) == 4
    table = runs(study)
    assert len(table) == 4
    for key, row in table.items():
        assert row["status"] == "succeeded", (key, row["cause"], row["log_tail"])
        assert row["attempts"] == 1 and 0 < row["val_bpb"] < 20
        assert row["num_steps"] > 0 and row["checkpoint_sha256"]
        summary = json.loads(row["summary_json"])
        assert summary["condition_id"] == key.split("/")[0]
        log = Path(row["log_path"]).read_text()
        assert "progress: step=" in log and "val_bpb:" in log
    assert len(events(study, "run.succeeded")) == 4
    # Both workers ran at once: the stage took less than the runs back to back.
    total = sum(r["seconds"] for r in result["succeeded"])
    assert result["wall_seconds"] < 0.85 * total
