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
    "versions",
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


@pytest.mark.smoke
def test_doctor_passes_and_measures_on_this_machine(
    sample_data: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STAGEWISE_CACHE", str(tmp_path / "cache"))
    proc = run_cli("doctor", "--json", "--data", sample_data, "--steps", "6")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)  # stdout is the JSON only: the run's output is kept out
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == NAMES
    # WARN only for versions outside the tested set (CI's newest-versions leg has some)
    assert all(
        c["status"] in ("PASS", "SKIP") or (c["name"], c["status"]) == ("versions", "WARN")
        for c in report["checks"]
    )
    by_name = {c["name"]: c for c in report["checks"]}
    assert torch.__version__ in by_name["torch"]["detail"]
    assert str(sample_data) in by_name["data"]["detail"]
    smoke = report["smoke"]
    assert smoke["steps"] == 6 and smoke["untimed_steps"] >= 1
    assert smoke["tokens_per_second"] > 0 and smoke["steps_in_5_minutes"] > 0
    assert 0 < smoke["val_bpb"] < 20 and smoke["eval_batch_size"] >= 1
    assert smoke["executor"] == "local warm worker" and smoke["startup_seconds"] > 0
    # The measurement is kept in the user cache for `freeze` (no --study given).
    kept = json.loads((tmp_path / "cache" / "doctor.json").read_text())
    assert kept["seconds_per_step"] == smoke["seconds_per_step"] > 0
    assert kept["total_batch_size"] == smoke["total_batch_size"] > 0
    assert kept["device"] == smoke["device"] and kept["measured_at"].endswith("+00:00")
    versions = {row["package"]: row for row in report["versions"]}
    assert versions["torch"]["installed"] == torch.__version__
    assert {"torch", "typer", "numpy", "pandas"} <= set(versions)
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


def test_a_warm_worker_that_cannot_start_fails_the_smoke_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sample_data: Path,  # noqa: F811
) -> None:
    """The smoke run goes through a spawned `stagewise worker`, as a study's runs do: a worker
    that dies at start (here made to, as a missing module once did) fails doctor, with the
    worker's own last line and the command that shows the whole log; the rest still passes."""
    import os

    broken = tmp_path / "site"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if sys.argv[-1:] == ['worker']:\n"
        "    print(\"ModuleNotFoundError: No module named 'nowhere'\", file=sys.stderr, flush=True)\n"
        "    os._exit(1)\n"
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(broken), os.environ.get("PYTHONPATH", "")])
    )
    proc = run_cli("doctor", "--data", sample_data, "--steps", "6")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    smoke = next(line for line in lines if " smoke training:" in line)
    assert smoke.startswith("FAIL smoke training: warm worker: crash"), smoke
    assert "No module named 'nowhere'" in smoke and "-> fix: run it by hand" in smoke
    assert "stagewise train --depth 2" in smoke
    assert all(not line.startswith("FAIL") for line in lines if line is not smoke)
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_version_outside_the_tested_set_is_flagged_with_the_fix() -> None:
    import typer

    from stagewise.doctor import check_versions
    from stagewise.tested_set import parse_pins, shipped_constraints

    pins = parse_pins(shipped_constraints())
    check, rows = check_versions({**pins, "typer": "0.0.1"})
    assert check.status == "WARN", check.line()
    assert f"outside the tested set: typer {typer.__version__} (tested 0.0.1)" in check.detail
    assert check.fix is not None and check.fix.startswith("pip install -c ")
    assert check.fix.split()[3].endswith("constraints.txt")
    typer_row = next(r for r in rows if r["package"] == "typer")
    assert typer_row["as_tested"] is False and typer_row["tested"] == "0.0.1"
    missing = {k: v for k, v in pins.items() if k != "numpy"}
    check, _ = check_versions(missing)
    assert check.status == "WARN" and "(not in the tested set)" in check.detail


def test_a_study_given_keeps_the_measurement_in_its_folder(tmp_path: Path) -> None:
    """`doctor --study DIR` keeps the smoke run's seconds per step in DIR/doctor.json, which
    `freeze` reads before the user cache; nothing measured, nothing kept."""
    from stagewise.doctor import record_rate
    from stagewise.gates.doctor_rate import read_rate
    from tests.conftest import write_study

    smoke = {
        "device": "cpu",
        "depth": 2,
        "aspect_ratio": 32,
        "sequence_len": 128,
        "device_batch_size": 16,
        "total_batch_size": 2048,
        "seconds_per_step": 0.05,
        "measured_at": "2026-01-02T03:04:05+00:00",
    }
    study = write_study(tmp_path / "s")
    assert record_rate(smoke, study) == study / "doctor.json"
    found = read_rate(study)
    assert found is not None and found[1] == study / "doctor.json"
    assert found[0].seconds_per_step == 0.05 and found[0].total_batch_size == 2048
    assert record_rate(None, study) is None
    assert record_rate({**smoke, "seconds_per_step": None}, study) is None
    proc = run_cli("doctor", "--study", tmp_path / "nowhere", "--no-smoke")
    assert proc.returncode != 0 and "no study.toml there" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
