from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stagewise.runner.config import TrainConfig
from tests.data.conftest import sample_data, stagewise  # noqa: F401  (shared fixture + helper)


@pytest.fixture
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In-process runs use one thread too (see `stagewise()`), and give the setting back."""
    before = torch.get_num_threads()
    monkeypatch.setenv("STAGEWISE_TORCH_THREADS", "1")
    yield
    torch.set_num_threads(before)


def tiny_config(data: Path, out: Path, **changes: object) -> TrainConfig:
    """A CPU run of a few seconds on the sample data (the unit tests' runner settings)."""
    base = TrainConfig(
        depth=2,
        aspect_ratio=32,
        total_batch_size=4096,
        device="cpu",
        sequence_len=128,
        device_batch_size=16,
        eval_tokens=8192,
        time_budget=2,
        data=str(data),
        out=str(out),
    )
    return base.replace(**changes)
