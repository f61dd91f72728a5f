from __future__ import annotations

import json

import pytest
import torch

from stagewise.errors import RunnerError
from stagewise.model_size import count_params
from stagewise.runner.model import GPT, GPTConfig

from .conftest import stagewise

# autoresearch's totals at vocab 8192 for the paper's depth/aspect pairs.
PAPER = [
    (8, 64, 50_332_176),
    (6, 72, 39_846_284),
    (8, 48, 33_030_544),
    (6, 64, 26_345_772),
    (4, 64, 11_534_472),
]


@pytest.mark.parametrize(("depth", "aspect", "expected"), PAPER)
def test_matches_autoresearch(depth: int, aspect: int, expected: int) -> None:
    assert count_params(depth, aspect)["num_params"] == expected


def test_shape_fields() -> None:
    assert count_params(8, 64) == {"num_params": 50_332_176, "model_dim": 512, "n_head": 4}
    assert count_params(6, 72)["model_dim"] == 512  # 432 rounded up to a multiple of 128
    assert count_params(2, 32)["model_dim"] == 128 and count_params(2, 32)["n_head"] == 1


@pytest.mark.parametrize(
    ("depth", "aspect", "vocab", "head_dim"),
    [(1, 64, 300, 32), (2, 32, 512, 64), (3, 20, 1000, 16), (4, 16, 777, 32), (5, 24, 261, 64)],
)
def test_analytic_equals_instantiated(depth: int, aspect: int, vocab: int, head_dim: int) -> None:
    counted = count_params(depth, aspect, vocab_size=vocab, head_dim=head_dim)
    dim = counted["model_dim"]
    with torch.device("meta"):
        model = GPT(
            GPTConfig(
                sequence_len=64,
                vocab_size=vocab,
                n_layer=depth,
                n_head=dim // head_dim,
                head_dim=head_dim,
            )
        )
    assert counted["num_params"] == sum(p.numel() for p in model.parameters())


def test_rejects_nonsense() -> None:
    with pytest.raises(RunnerError, match="depth must be a positive integer"):
        count_params(0, 64)


def test_cli_json() -> None:
    proc = stagewise("params", "--depth", "6", "--aspect-ratio", "72", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"num_params": 39_846_284, "model_dim": 512, "n_head": 4}
