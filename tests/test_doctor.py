"""`stagewise doctor` end to end on this machine (a CPU in CI): checks, fixes, smoke training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stagewise.doctor import Check, Report
from tests.conftest import run_cli
from tests.data.conftest import sample_data  # noqa: F401  (shared fixture)

NAMES = [
    "torch",
    "device",
    "bf16",
    "torch.compile",
    "flex attention",
    "data",
    "smoke training",
]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # The smoke run shares the machine with other tests: one torch thread, as executors give.
    monkeypatch.setenv("STAGEWISE_TORCH_THREADS", "1")


def test_doctor_passes_and_measures_on_this_machine(sample_data: Path) -> None:  # noqa: F811
    proc = run_cli("doctor", "--json", "--data", sample_data, "--steps", "6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)  # stdout is the JSON only: the run's output is kept out
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == NAMES
    assert all(c["status"] in ("PASS", "SKIP") for c in report["checks"])
    by_name = {c["name"]: c for c in report["checks"]}
    assert torch.__version__ in by_name["torch"]["detail"]
    assert str(sample_data) in by_name["data"]["detail"]
    smoke = report["smoke"]
    assert smoke["steps"] == 6 and smoke["untimed_steps"] >= 1
    assert smoke["tokens_per_second"] > 0 and smoke["steps_in_5_minutes"] > 0
    assert 0 < smoke["val_bpb"] < 20 and smoke["eval_batch_size"] >= 1
    if not torch.cuda.is_available():
        assert smoke["device"] == "cpu" and smoke["mfu_percent"] is None
        assert by_name["flex attention"]["status"] == "SKIP"


def test_text_output_is_one_line_per_check_with_the_fix(tmp_path: Path) -> None:
    empty = tmp_path / "nodata"
    empty.mkdir()
    proc = run_cli("doctor", "--data", empty, "--no-smoke")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(" ", 1)[1].split(":")[0] for line in lines] == NAMES
    data_line = next(line for line in lines if line.startswith("FAIL data:"))
    assert f"-> fix: stagewise data prepare --source sample --out {empty}" in data_line
    assert lines[-1].startswith("SKIP smoke training")
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_a_requested_gpu_that_is_missing_fails_with_the_fix() -> None:
    proc = run_cli("doctor", "--device", "cuda", "--no-smoke", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    device = next(c for c in report["checks"] if c["name"] == "device")
    assert device["status"] == "FAIL" and "--device cpu" in device["fix"]


def test_report_is_ok_unless_a_check_failed() -> None:
    assert Report([Check("a", "PASS", "x"), Check("b", "SKIP", "y")]).ok
    report = Report([Check("a", "PASS", "x"), Check("b", "FAIL", "y", "do z")])
    assert not report.ok and report.to_json()["checks"][1]["fix"] == "do z"
    assert Check("b", "FAIL", "y", "do z").line() == "FAIL b: y -> fix: do z"
