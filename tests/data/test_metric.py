from __future__ import annotations

import math

import pytest
import torch

from stagewise.data.metric import batch_sums, bpb_from_sums, evaluate_bpb


def test_hand_computed_bpb() -> None:
    # Uniform predictions over 4 tokens: every target costs ln 4 nats = 2 bits.
    # token bytes: id0 is special (0 bytes), ids 1..3 have 1..3 bytes.
    token_bytes = torch.tensor([0, 1, 2, 3])
    targets = torch.tensor([[1, 2, 0, 3]])
    losses = torch.full((1, 4), math.log(4))
    nats, nbytes = batch_sums(losses, targets, token_bytes)
    # The special target (id 0) is excluded from both sums: 3 tokens * 2 bits / 6 bytes.
    assert float(nats) == pytest.approx(3 * math.log(4))
    assert int(nbytes) == 6
    assert bpb_from_sums(float(nats), int(nbytes)) == pytest.approx(1.0)


def test_evaluate_bpb_sums_over_batches() -> None:
    token_bytes = torch.tensor([0, 1, 2, 3])
    batches = iter(
        [
            (torch.zeros(1, 2, dtype=torch.long), torch.tensor([[1, 1]]), 1),
            (torch.zeros(1, 2, dtype=torch.long), torch.tensor([[3, 0]]), 1),
        ]
    )

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(y == 1, math.log(2), math.log(8)).float()  # 1 bit / 3 bits

    # (1 + 1 + 3) bits over (1 + 1 + 3) bytes; the special target adds nothing.
    assert evaluate_bpb(loss_fn, batches, 2, token_bytes) == pytest.approx(1.0, rel=1e-6)


def test_no_bytes_is_an_error() -> None:
    with pytest.raises(ValueError):
        bpb_from_sums(1.0, 0)
