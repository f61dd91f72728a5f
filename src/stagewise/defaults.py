"""The runner's fixed constants, named once, and the one model_dim formula.

As autoresearch's `prepare.py` owns the fixed things, this module owns the values every layer
agrees on: the runner's defaults (`stagewise.runner.config.TrainConfig`), the parameter count
(`stagewise.model_size`), data preparation, the study loader's and the gates' costing of a
condition, and the bounds checks. It imports nothing, so any layer may read it.
"""

from __future__ import annotations

VOCAB_SIZE = 8192  # autoresearch's BPE vocabulary, incl. its 4 reserved special tokens
HEAD_DIM = 128  # autoresearch's attention head width; model_dim is rounded up to a multiple
SEQUENCE_LEN = 2048  # autoresearch's MAX_SEQ_LEN: the context every training row fills
DEVICE_BATCH_SIZE = 128  # autoresearch's rows per forward/backward on an H100
EVAL_TOKENS = 40 * 524288  # autoresearch's ~21M validation tokens: a val_bpb stable to ~1e-3
TIME_BUDGET = 300.0  # autoresearch's fixed budget: 5 minutes of training
SEED = 42  # autoresearch seeds torch with 42
# Fewer optimizer steps than this and a run's val_bpb says more about its initialisation than
# its recipe: the run is flagged `too_short` (`[runner] min_steps` overrides it; 0 turns it off).
MIN_STEPS = 20


def model_dim_for(depth: int, aspect_ratio: int, head_dim: int = HEAD_DIM) -> int:
    """depth * aspect_ratio rounded up to a whole number of heads (autoresearch's model_dim)."""
    return -(-depth * aspect_ratio // head_dim) * head_dim
