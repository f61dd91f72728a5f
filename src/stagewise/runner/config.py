"""TrainConfig: every constant of the runner, named once, validated at construction.

Defaults are autoresearch's `train.py` / `prepare.py` values; a study overrides the few it
varies (depth, aspect ratio, matrix LR, total batch, budget, seed). The canonical JSON of a
config (sorted keys, no whitespace) and its sha256 identify a run's recipe in summaries and in
the ledger. Everything is hashed except `out`: where the results land does not change what
ran, and leaving it out lets two runs of one recipe and seed share a hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from stagewise import defaults
from stagewise.bounds import eval_batch_problem
from stagewise.errors import RunnerError

# A budget is training seconds. The fixed values live in stagewise.defaults, with their reasons.
DEFAULT_TIME_BUDGET = defaults.TIME_BUDGET
DEFAULT_EVAL_TOKENS = defaults.EVAL_TOKENS
WINDOW_LETTERS = frozenset("SL")


@dataclass(frozen=True)
class TrainConfig:
    # --- model (autoresearch: DEPTH, ASPECT_RATIO, HEAD_DIM, WINDOW_PATTERN) ---
    depth: int = 8  # transformer layers
    aspect_ratio: int = 64  # model_dim = depth * aspect_ratio, rounded up to head_dim
    head_dim: int = defaults.HEAD_DIM  # attention head width; heads = model_dim / head_dim
    window_pattern: str = "SSSL"  # per layer, cycled: S = half-context window, L = full causal
    sequence_len: int = defaults.SEQUENCE_LEN  # context length (autoresearch's MAX_SEQ_LEN)
    vocab_size: int | None = None  # None: whatever the prepared tokenizer has (8192 by default)
    # --- optimisation (autoresearch's tuned constants) ---
    total_batch_size: int = 2**19  # tokens per optimizer step (~524K)
    device_batch_size: int = (
        defaults.DEVICE_BATCH_SIZE
    )  # rows per forward/backward; grad accumulation makes up the rest
    matrix_lr: float = 0.04  # Muon LR for the transformer matrices
    embedding_lr: float = 0.6  # Adam LR for token and value embeddings (scaled by 1/sqrt(d/768))
    unembedding_lr: float = 0.004  # Adam LR for lm_head (scaled by 1/sqrt(d/768))
    scalar_lr: float = 0.5  # Adam LR for the per-layer x0 scalars (residual scalars get 1/100)
    adam_beta1: float = 0.8
    adam_beta2: float = 0.95
    weight_decay: float = 0.2  # cautious decoupled decay on Muon matrices, decayed to 0 by the end
    warmup_ratio: float = 0.0  # fraction of the budget spent ramping the LR up
    warmdown_ratio: float = 0.5  # fraction of the budget spent ramping the LR down
    final_lr_frac: float = 0.0  # LR multiplier reached at the end of the warmdown
    # --- budget, evaluation, reproducibility ---
    time_budget: float = DEFAULT_TIME_BUDGET  # training seconds (untimed steps excluded)
    # A budget in tokens or optimizer steps replaces the time budget: host speed then changes
    # only how long a run takes, not what it trains on (A100 and L40S see the same tokens).
    token_budget: int | None = None  # trains ceil(token_budget / total_batch_size) steps
    step_budget: int | None = None
    eval_tokens: int = DEFAULT_EVAL_TOKENS
    # Rows per evaluation forward; None: sized for the device (runner/eval_batch.py). Any size
    # reads the same validation rows, so it changes how fast val_bpb comes, not its value.
    eval_batch_size: int | None = None
    seed: int = defaults.SEED
    deterministic: bool = False  # progress = step / steps instead of wall-clock time
    steps: int | None = None  # the fixed step count of a deterministic run
    # --- where and how ---
    device: str = "auto"  # auto | cuda | cpu (auto: cuda when available)
    compile: bool | None = None  # None: on for CUDA, off for CPU (compile costs more than it saves)
    data: str = "data"  # a folder prepared by `stagewise data prepare`
    out: str = "run"  # summary.json, train_loss.csv and the checkpoint go here
    condition_id: str | None = None  # the study's condition, recorded in summary.json
    extra: dict[str, Any] = field(default_factory=dict)  # free annotations; part of the hash

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> RunnerError:
            return RunnerError(f"{name} must be {expected}, but got {name}={getattr(self, name)!r}")

        for name in (
            "depth",
            "aspect_ratio",
            "head_dim",
            "sequence_len",
            "total_batch_size",
            "device_batch_size",
            "eval_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(name, "a positive integer")
        if self.vocab_size is not None and (
            not isinstance(self.vocab_size, int) or self.vocab_size < 261
        ):
            raise bad("vocab_size", "an integer >= 261 (256 bytes + 4 specials + 1 merge) or None")
        if self.head_dim % 2:
            raise bad("head_dim", "even (RoPE rotates pairs of channels)")
        if not self.window_pattern or not set(self.window_pattern.upper()) <= WINDOW_LETTERS:
            raise bad("window_pattern", "a non-empty string of S and L")
        for name in ("matrix_lr", "embedding_lr", "unembedding_lr", "scalar_lr", "weight_decay"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise bad(name, "a finite number >= 0")
        for name in ("adam_beta1", "adam_beta2", "warmup_ratio", "warmdown_ratio", "final_lr_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise bad(name, "between 0 and 1")
        if self.warmup_ratio + self.warmdown_ratio > 1:
            raise RunnerError(
                f"warmup_ratio + warmdown_ratio must be <= 1, but got "
                f"{self.warmup_ratio} + {self.warmdown_ratio}"
            )
        if not 0 < self.time_budget < float("inf"):
            raise bad("time_budget", "a positive number of seconds")
        for name in ("token_budget", "step_budget", "eval_batch_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise bad(name, "a positive integer or None")
        if self.token_budget is not None and self.step_budget is not None:
            raise RunnerError("give --token-budget or --step-budget, not both")
        if self.deterministic and (self.token_budget or self.step_budget):
            raise RunnerError(
                "--deterministic counts --steps already; drop --token-budget/--step-budget"
            )
        tokens_per_pass = self.device_batch_size * self.sequence_len
        if self.total_batch_size % tokens_per_pass:
            raise RunnerError(
                f"total_batch_size={self.total_batch_size} must be a multiple of device_batch_size"
                f" * sequence_len = {self.device_batch_size} * {self.sequence_len} = {tokens_per_pass}"
            )
        if self.eval_tokens < tokens_per_pass:
            raise RunnerError(
                f"eval_tokens={self.eval_tokens} must be at least device_batch_size * sequence_len"
                f" = {tokens_per_pass} (one evaluation batch)"
            )
        if self.eval_batch_size is not None:
            problem = eval_batch_problem(
                self.eval_batch_size, self.eval_tokens, self.device_batch_size, self.sequence_len
            )
            if problem is not None:
                raise RunnerError(f"eval_batch_size={self.eval_batch_size} {problem}")
        if self.device not in ("auto", "cuda", "cpu") and not self.device.startswith("cuda:"):
            raise bad("device", "'auto', 'cuda', 'cuda:N' or 'cpu'")
        if self.deterministic and (self.steps is None or self.steps < 1):
            raise RunnerError("--deterministic needs --steps N (a positive step count)")
        if self.steps is not None and (self.steps < 1 or not self.deterministic):
            raise RunnerError(f"--steps {self.steps} is only valid with --deterministic")

    # --- derived quantities ---
    @property
    def model_dim(self) -> int:
        return defaults.model_dim_for(self.depth, self.aspect_ratio, self.head_dim)

    @property
    def n_head(self) -> int:
        return self.model_dim // self.head_dim

    @property
    def grad_accum_steps(self) -> int:
        return self.total_batch_size // (self.device_batch_size * self.sequence_len)

    @property
    def target_steps(self) -> int | None:
        """The step count a token, step or deterministic budget fixes; None for wall clock."""
        if self.token_budget is not None:
            return -(-self.token_budget // self.total_batch_size)
        if self.step_budget is not None:
            return self.step_budget
        return self.steps if self.deterministic else None

    def budget_text(self) -> str:
        if self.token_budget is not None:
            return f"{self.token_budget} tokens"
        if self.step_budget is not None:
            return f"{self.step_budget} steps"
        return f"{self.time_budget:g}s"

    @property
    def eval_steps(self) -> int:
        return self.eval_tokens // (self.device_batch_size * self.sequence_len)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RunnerError(
                f"unknown config keys: {', '.join(unknown)} (valid: {', '.join(sorted(known))})"
            )
        return cls(**data)


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_sha256(config: TrainConfig | dict[str, Any]) -> str:
    data = dict(config.to_dict() if isinstance(config, TrainConfig) else config)
    data.pop("out", None)
    for name in ("token_budget", "step_budget", "eval_batch_size"):
        if data.get(name) is None:
            data.pop(name, None)  # recipes from before these existed keep their hash
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def parse_budget(text: str | float) -> float:
    """Seconds from `300`, `4s`, `10m`, `12h` (the project's duration syntax)."""
    from stagewise.budget_units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise RunnerError(f"--time-budget: {exc}") from exc


def parse_count(option: str, text: str | None) -> int | None:
    """Tokens or steps from `50000000`, `50M`, `32K`, `2B` (K/M/B = 1e3/1e6/1e9); None stays None."""
    from stagewise.budget_units import parse_budget as parse_any

    if text is None:
        return None
    body = text.strip()
    for suffix in ("tok", "steps"):
        body = body.removesuffix(suffix)
    try:
        return int(parse_any(body + "tok").amount)
    except ValueError:
        raise RunnerError(
            f"{option} expects a whole number, optionally with K/M/B (50M = 50,000,000), "
            f"but got {text!r}"
        ) from None
