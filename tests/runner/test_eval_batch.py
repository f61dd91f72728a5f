"""The evaluation batch: sized for the device, reading the same rows, falling back on OOM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from stagewise.bounds import divisors, eval_batch_problem, eval_rows
from stagewise.errors import RunnerError
from stagewise.runner.config import TrainConfig, config_sha256
from stagewise.runner.eval_batch import (
    CPU_LOGITS_BYTES,
    GPU_MAX_GROWTH,
    EvalBatch,
    choose,
    with_fallback,
)
from stagewise.runner.loop import train

from .conftest import stagewise, tiny_config

MiB = 2**20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_divisors() -> None:
    assert divisors(1) == [1]
    assert divisors(64) == [1, 2, 4, 8, 16, 32, 64]
    assert divisors(5120)[-3:] == [1280, 2560, 5120]
    assert eval_rows(8192 + 100, 16, 128) == 64  # whole training batches only
    assert eval_batch_problem(32, 8192, 16, 128) is None
    assert "nearby choices: 1, 2, 4, 8, 16" in str(eval_batch_problem(5, 8192, 16, 128))
    assert eval_batch_problem("x", 8192, 16, 128) is None  # the option's own check says why


@pytest.mark.parametrize(
    ("seq", "vocab", "train_rows", "expected"),
    [
        (128, 512, 8, 32),  # the demo: 256 KiB of logits a row -> 32 rows, above training
        (2048, 512, 16, 2),  # 4 MiB a row: below the training batch
        (2048, 8192, 128, 1),  # 64 MiB a row: one row at a time, never zero
        (512, 8192, 16, 1),
    ],
)
def test_cpu_batch_is_largest_divisor_within_the_logits_budget(
    seq: int, vocab: int, train_rows: int, expected: int
) -> None:
    rows = eval_rows(8 * train_rows * seq, train_rows, seq)
    batch = choose(rows, train_rows, seq, vocab, kind="cpu")
    assert batch.rows == expected and batch.rows * batch.steps == rows
    assert batch.rows == 1 or batch.rows * seq * vocab * 4 <= CPU_LOGITS_BYTES


def test_cuda_batch_grows_with_free_memory_within_limits() -> None:
    rows = eval_rows(40 * 524288, 128, 2048)  # autoresearch: 40 batches of 128 rows
    args = (rows, 128, 2048, 8192)
    # No memory figures (or a deterministic run): the training batch, which is known to fit.
    assert choose(*args, kind="cuda").rows == 128
    roomy = {"free_bytes": 1e12, "row_bytes": 300 * MiB}
    assert choose(*args, kind="cuda", deterministic=True, **roomy).rows == 128
    # Plenty of memory: at most GPU_MAX_GROWTH times the training batch, dividing the rows.
    grown = choose(*args, kind="cuda", **roomy)
    assert grown.rows == 512 == GPU_MAX_GROWTH * 128 and rows % grown.rows == 0
    # 60 GB free, 300 MiB a row: 0.8 * 60e9 / 314.6e6 = 152 rows -> the largest divisor, 128.
    assert choose(*args, kind="cuda", free_bytes=60e9, row_bytes=300 * MiB).rows == 128
    # 100 GB: 254 rows -> 160 (5120's largest divisor up to 254).
    assert choose(*args, kind="cuda", free_bytes=100e9, row_bytes=300 * MiB).rows == 160
    # Too little free memory for even the training batch: keep it (training held it already).
    assert choose(*args, kind="cuda", free_bytes=1e9, row_bytes=300 * MiB).rows == 128


def test_fallback_to_the_training_batch_on_out_of_memory() -> None:
    tried: list[int] = []
    released: list[bool] = []

    def evaluate(batch_rows: int) -> float:
        tried.append(batch_rows)
        if batch_rows > 128:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 1.25

    def is_oom(exc: BaseException) -> bool:
        return isinstance(exc, torch.OutOfMemoryError)

    chosen = EvalBatch(rows=512, steps=10, why="guess")
    value, used = with_fallback(evaluate, chosen, 128, 5120, is_oom, lambda: released.append(True))
    assert value == 1.25 and tried == [512, 128] and released == [True]
    assert used.rows == 128 and used.steps == 40 and "out of memory at 512" in used.why

    # At the training batch an OOM is the run's OOM; other errors are never swallowed.
    with pytest.raises(torch.OutOfMemoryError):
        with_fallback(evaluate, EvalBatch(256, 20, "x"), 256, 5120, is_oom, lambda: None)

    def broken(batch_rows: int) -> float:
        raise ValueError("not memory")

    with pytest.raises(ValueError):
        with_fallback(broken, chosen, 128, 5120, is_oom, lambda: None)


def test_explicit_batch_must_divide_the_rows(sample_data: Path, tmp_path: Path) -> None:
    base = {"device_batch_size": 16, "sequence_len": 128, "eval_tokens": 8192}
    assert TrainConfig(**base, eval_batch_size=4).eval_batch_size == 4  # type: ignore[arg-type]
    with pytest.raises(RunnerError, match=r"eval_batch_size=7 must divide the 64 evaluation rows"):
        TrainConfig(**base, eval_batch_size=7)  # type: ignore[arg-type]
    # The CLI: one line, exit 2, nothing trained.
    proc = stagewise(
        "train",
        "--device",
        "cpu",
        "--sequence-len",
        "128",
        "--device-batch-size",
        "16",
        "--total-batch-size",
        "2048",
        "--eval-tokens",
        "8192",
        "--eval-batch-size",
        "7",
        "--data",
        sample_data,
        "--out",
        tmp_path / "bad",
    )
    assert proc.returncode == 2
    assert "eval_batch_size=7 must divide the 64 evaluation rows" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unset_batch_keeps_old_recipe_hashes() -> None:
    cfg = TrainConfig()
    old = cfg.to_dict()
    del old["eval_batch_size"]  # a summary written before the option existed
    assert config_sha256(cfg) == config_sha256(old)
    assert config_sha256(cfg.replace(eval_batch_size=128)) != config_sha256(cfg)


def test_any_batch_reads_the_same_rows(sample_data: Path, tmp_path: Path) -> None:
    """One deterministic model evaluated at 1, 16 (training) and auto rows per forward."""
    bpbs = {}
    for name, size in (("one", 1), ("train", 16), ("auto", None)):
        cfg = tiny_config(
            sample_data, tmp_path / name, eval_batch_size=size, deterministic=True, steps=3
        )
        summary = train(cfg)
        assert summary["status"] == "succeeded", summary["cause"]
        saved = json.loads((tmp_path / name / "summary.json").read_text())
        assert saved["eval_batch_size"] == (size or summary["eval_batch_size"])
        bpbs[name] = summary["val_bpb"]
    vocab = int(json.loads((sample_data / "data.json").read_text())["vocab_size"])
    assert bpbs["one"] == pytest.approx(bpbs["train"], abs=1e-6)
    assert bpbs["auto"] == pytest.approx(bpbs["train"], abs=1e-6)
    expected = choose(64, 16, 128, vocab, kind="cpu").rows
    assert json.loads((tmp_path / "auto" / "summary.json").read_text())["eval_batch_size"] == (
        expected
    )


@pytest.mark.slow
# inductor's CPU backend touches a deprecated torch.jit API while compiling: not our warning
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compiled_eval_builds_one_graph_whatever_the_batch() -> None:
    """Why a device-sized batch costs no compilation: evaluation (eval mode, per-token losses)
    is a graph of its own even at the training batch. CPU inductor stands in for CUDA."""
    from torch._dynamo.utils import counters

    from stagewise.runner.device import setup_device
    from stagewise.runner.loop import build_model

    cfg = TrainConfig(
        depth=1,
        aspect_ratio=64,
        head_dim=32,
        sequence_len=32,
        device_batch_size=4,
        total_batch_size=128,
        eval_tokens=512,
        window_pattern="L",
        device="cpu",
    )
    new_graphs = {}
    for eval_rows_per_forward in (4, 8):
        torch._dynamo.reset()
        counters.clear()
        torch.manual_seed(0)
        setup = setup_device("cpu", True)
        model = build_model(cfg, 300, setup)
        fwd = torch.compile(model, dynamic=False)
        x = torch.randint(0, 300, (4, 32))
        with setup.autocast_ctx():
            fwd(x, x).backward()
        trained = counters["stats"]["unique_graphs"]
        model.eval()
        with torch.no_grad(), setup.autocast_ctx():
            for _ in range(2):
                batch = torch.randint(0, 300, (eval_rows_per_forward, 32))
                fwd(batch, batch, reduction="none")
        new_graphs[eval_rows_per_forward] = counters["stats"]["unique_graphs"] - trained
    torch._dynamo.reset()
    assert new_graphs == {4: 1, 8: 1}
