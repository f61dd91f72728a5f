"""val_bpb: bits per byte on the pinned validation shard, autoresearch's fixed metric.

val_bpb = (sum over target tokens of cross-entropy in nats) / (ln 2 * sum of their bytes), bytes
counted per token as autoresearch counts them (see `data/tokenizer.py`: decode, then UTF-8).
Dividing by bytes instead of tokens makes runs with different vocabularies comparable. Targets
that are special tokens (byte length 0, i.e. BOS at a document start) are left out of both sums:
predicting where a document begins is not language modelling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any


def bpb_from_sums(total_nats: float, total_bytes: int) -> float:
    if total_bytes <= 0:
        raise ValueError("no target bytes: cannot compute bits per byte")
    return total_nats / (math.log(2) * total_bytes)


def batch_sums(loss_per_token: Any, targets: Any, token_bytes: Any) -> tuple[Any, Any]:
    """(nats, bytes) of one batch, as tensors (no host sync) with special tokens masked out."""
    nbytes = token_bytes[targets.reshape(-1)]
    mask = nbytes > 0
    nats = (loss_per_token.reshape(-1).float() * mask).sum()
    return nats, nbytes.sum()


def evaluate_bpb(
    loss_fn: Callable[[Any, Any], Any],
    batches: Iterator[tuple[Any, Any, int]],
    steps: int,
    token_bytes: Any,
) -> float:
    """val_bpb over `steps` batches; `loss_fn(x, y)` returns per-token losses in nats."""
    import torch

    total_nats = torch.zeros((), dtype=torch.float64, device=token_bytes.device)
    total_bytes = torch.zeros((), dtype=torch.int64, device=token_bytes.device)
    with torch.no_grad():
        for _ in range(steps):
            x, y, _ = next(batches)
            nats, nbytes = batch_sums(loss_fn(x, y), y, token_bytes)
            total_nats += nats.double()
            total_bytes += nbytes
    return bpb_from_sums(float(total_nats.item()), int(total_bytes.item()))
