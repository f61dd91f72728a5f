"""End-to-end CPU runs on the sample corpus: the contracts executors and importers rely on."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from stagewise.errors import CheckpointError
from stagewise.protocol import BLOCK_FIELDS, parse_block, round_fields
from stagewise.runner.checkpoint import file_sha256, load_checkpoint, verify_checkpoint
from stagewise.runner.config import TrainConfig, config_sha256
from stagewise.runner.loop import train

from .conftest import stagewise, tiny_config

PROGRESS = re.compile(
    r"^progress: step=(\d+) progress=([0-9.]+) loss=([0-9.]+|nan) tok_per_s=([0-9.]+) "
    r"mfu=([0-9.]+|nan) remaining_s=([0-9.]+)$",
    re.M,
)
TINY = [
    "--depth",
    "2",
    "--aspect-ratio",
    "32",
    "--total-batch-size",
    "4096",
    "--device",
    "cpu",
    "--sequence-len",
    "128",
    "--device-batch-size",
    "16",
    "--eval-tokens",
    "8192",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_run(
    sample_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("run")
    proc = stagewise(
        "train",
        *TINY,
        "--time-budget",
        "3s",
        "--seed",
        "7",
        "--condition-id",
        "c_a",
        "--data",
        sample_data,
        "--out",
        out,
    )
    return proc, out


def test_tiny_run_succeeds(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = tiny_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "succeeded" and summary["cause"] is None
    assert summary["seed"] == 7 and summary["condition_id"] == "c_a"
    assert summary["config"]["depth"] == 2 and summary["depth"] == 2
    assert summary["config_sha256"] == config_sha256(summary["config"])
    assert {"torch", "cuda", "device", "driver"} <= set(summary["versions"])
    assert summary["training_seconds"] >= 3.0 and summary["num_steps"] > summary["untimed_steps"]
    # CPU without compile: only the first step (allocator warm-up) is left out of the budget.
    assert summary["untimed_steps"] == 1 and summary["compile_seconds"] == 0.0
    assert 0 < summary["eval_seconds"] < summary["total_seconds"]
    assert summary["mfu_percent"] is None  # no peak FLOPS for a CPU


def test_block_and_summary_agree(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = tiny_run
    block = parse_block(proc.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert set(block) == {key for key, _ in BLOCK_FIELDS}
    printed = round_fields(summary)
    for key in block:
        assert block[key] == printed[key], key
    # The JSON is unrounded: the block is the same number at the printed precision.
    assert summary["val_bpb"] != round(summary["val_bpb"], 3)
    assert proc.stdout.rstrip().splitlines()[-10] == "---"


def test_progress_lines(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, _ = tiny_run
    lines = PROGRESS.findall(proc.stdout)
    assert len(lines) >= 3
    steps = [int(s) for s, *_ in lines]
    assert steps == sorted(steps) and float(lines[-1][1]) == 1.0 and float(lines[-1][5]) == 0.0
    summary_steps = json.loads((tiny_run[1] / "summary.json").read_text())["num_steps"]
    assert steps[-1] == summary_steps  # the last step always gets a line


def test_loss_falls(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = tiny_run
    rows = (out / "train_loss.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0


def test_checkpoint_recorded(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = tiny_run
    summary = json.loads((out / "summary.json").read_text())
    ckpt = out / summary["checkpoint_path"]
    assert file_sha256(ckpt) == summary["checkpoint_sha256"]
    model, config = load_checkpoint(ckpt)
    assert config == summary["config"]
    assert model.num_params() == summary["num_params"]


def test_verify_checkpoint_cli(tiny_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = tiny_run
    proc = stagewise("verify-checkpoint", out, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and abs(result["val_bpb"] - result["recorded_val_bpb"]) < 5e-3


def test_verify_refuses_tampered_file(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    _, out = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    ckpt = copy / "model.safetensors"
    data = bytearray(ckpt.read_bytes())
    data[-100] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    proc = stagewise("verify-checkpoint", copy)
    assert proc.returncode == 1
    assert "does not match summary.json" in proc.stderr and "Traceback" not in proc.stderr


def test_verify_refuses_other_weights(
    tiny_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path
) -> None:
    """Same sha bookkeeping, different model: only the val_bpb re-evaluation can tell."""
    from stagewise.runner.checkpoint import save_checkpoint

    _, out = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    model, config = load_checkpoint(copy / "model.safetensors")
    model.init_weights()  # untrained weights
    _, sha = save_checkpoint(model, config, model.config.vocab_size, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["checkpoint_sha256"] = sha
    (copy / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(CheckpointError, match="not the trained weights"):
        verify_checkpoint(copy)


def test_deterministic_runs_repeat(sample_data: Path, tmp_path: Path) -> None:
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        summary = train(
            tiny_config(sample_data, tmp_path / name, seed=seed, deterministic=True, steps=14)
        )
        assert summary["status"] == "succeeded" and summary["num_steps"] == 14
        runs.append((tmp_path / name / "train_loss.csv").read_text())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_divergence_fails_fast(sample_data: Path, tmp_path: Path) -> None:
    lrs = [
        "--matrix-lr",
        "1e30",
        "--embedding-lr",
        "1e30",
        "--unembedding-lr",
        "1e30",
        "--scalar-lr",
        "1e30",
    ]
    proc = stagewise(
        "train", *TINY, *lrs, "--time-budget", "30s", "--data", sample_data, "--out", tmp_path
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "diverged" and "nan" in summary["cause"].lower()
    assert summary["training_seconds"] < 30 and summary["checkpoint_path"] is None
    assert "Traceback" not in proc.stderr


def test_out_of_memory_is_reported(
    sample_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stagewise.runner import optim

    def boom(self: object, closure: object = None) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(optim.MuonAdamW, "step", boom)
    summary = train(tiny_config(sample_data, tmp_path))
    assert summary["status"] == "oom" and "out of memory" in summary["cause"]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "oom"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"--data": "{missing}"}, "not a prepared data folder"),
        ({"--total-batch-size": "1000"}, "must be a multiple of device_batch_size"),
        ({"--time-budget": "soon"}, "--time-budget"),
        ({"--vocab-size": "8192"}, "vocab_size=8192, but the tokenizer"),
    ],
)
def test_bad_input_exit_2(
    sample_data: Path, tmp_path: Path, changes: dict[str, str], message: str
) -> None:
    options = dict(zip(TINY[::2], TINY[1::2], strict=True))
    options |= {"--data": str(sample_data), "--time-budget": "2s", "--out": str(tmp_path / "o")}
    options |= {k: v.replace("{missing}", str(tmp_path / "missing")) for k, v in changes.items()}
    proc = stagewise("train", *[x for kv in options.items() for x in kv])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_failed_summary_written_for_bad_data(tmp_path: Path) -> None:
    from stagewise.errors import DataError

    with pytest.raises(DataError):
        train(TrainConfig(data=str(tmp_path / "missing"), out=str(tmp_path / "o"), device="cpu"))
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["status"] == "failed" and "prepared data folder" in summary["cause"]


def test_threads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from stagewise.runner.device import set_threads

    before = torch.get_num_threads()
    monkeypatch.setenv("STAGEWISE_TORCH_THREADS", "1")
    try:
        set_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_cuda_run(sample_data: Path, tmp_path: Path) -> None:
    summary = train(tiny_config(sample_data, tmp_path, device="cuda", time_budget=5))
    assert summary["status"] == "succeeded" and summary["mfu_percent"] is not None


def test_sigterm_records_interrupted(sample_data: Path, tmp_path: Path) -> None:
    import os
    import signal
    import sys

    args = [
        "train",
        *TINY,
        "--time-budget",
        "60s",
        "--data",
        str(sample_data),
        "--out",
        str(tmp_path),
    ]
    cmd = [sys.executable, "-m", "stagewise", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("progress:"):
            break
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["cause"] == "interrupted"
