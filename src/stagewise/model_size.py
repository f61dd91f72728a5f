"""Parameter count of the runner's GPT, computed from the shapes alone (nothing is allocated).

A leaf module (pure arithmetic over `defaults`): the runner builds its model with these shapes,
and the gates cost a condition with the same count, without importing the runner.

Counts every parameter autoresearch counts (`num_scaling_params()['total']`): token embedding,
lm_head, the attention and MLP matrices, value embeddings with their gates on alternating
layers, and the two per-layer scalars. A study uses this to cost conditions before training.
"""

from __future__ import annotations

from stagewise.defaults import HEAD_DIM, VOCAB_SIZE, model_dim_for
from stagewise.errors import RunnerError

__all__ = [
    "MLP_EXPANSION",
    "VE_GATE_CHANNELS",
    "count_params",
    "has_value_embedding",
    "model_dim_for",
    "params_millions",
]

MLP_EXPANSION = 4  # hidden width of the relu^2 MLP, in multiples of model_dim
VE_GATE_CHANNELS = 32  # the value-embedding gate reads this many leading channels of x


def has_value_embedding(layer: int, n_layer: int) -> bool:
    """Alternating layers, always including the last one."""
    return layer % 2 == (n_layer - 1) % 2


def count_params(
    depth: int, aspect_ratio: int, vocab_size: int = VOCAB_SIZE, head_dim: int = HEAD_DIM
) -> dict[str, int]:
    for name, value in (
        ("depth", depth),
        ("aspect_ratio", aspect_ratio),
        ("vocab_size", vocab_size),
        ("head_dim", head_dim),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RunnerError(f"{name} must be a positive integer, but got {name}={value!r}")
    d = model_dim_for(depth, aspect_ratio, head_dim)
    n_head = d // head_dim
    embeddings = 2 * vocab_size * d  # wte + lm_head (untied)
    per_block = 4 * d * d + 2 * MLP_EXPANSION * d * d  # q, k, v, proj + fc, proj
    n_ve = sum(has_value_embedding(i, depth) for i in range(depth))
    value_embeds = n_ve * (vocab_size * d + VE_GATE_CHANNELS * n_head)
    scalars = 2 * depth  # resid_lambdas + x0_lambdas
    total = embeddings + depth * per_block + value_embeds + scalars
    return {"num_params": total, "model_dim": d, "n_head": n_head}


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def params_millions(
    depth: object,
    aspect_ratio: object,
    vocab_size: object = VOCAB_SIZE,
    head_dim: object = HEAD_DIM,
) -> float | None:
    """Parameters in millions of a condition's shapes, or None when they are not positive
    integers (a condition of an outside trainer need not have them)."""
    if not all(_positive_int(v) for v in (depth, aspect_ratio, vocab_size, head_dim)):
        return None
    assert isinstance(depth, int) and isinstance(aspect_ratio, int)
    assert isinstance(vocab_size, int) and isinstance(head_dim, int)
    return count_params(depth, aspect_ratio, vocab_size, head_dim)["num_params"] / 1e6
