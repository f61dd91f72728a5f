"""The GPT of autoresearch, with attention through PyTorch itself.

Architecture (autoresearch `train.py`): token embedding -> RMSNorm; per layer a residual mix
x = resid_lambda * x + x0_lambda * x0 (x0 is the normed embedding), then pre-norm attention and
a relu^2 MLP; RoPE then QK-norm on queries and keys; value embeddings (a second embedding table
added to V) on alternating layers, the last included, scaled per head by a gate that reads the
first 32 channels of the layer input; logits soft-capped at 15. No biases anywhere.

Attention: a letter per layer from the window pattern; S = sliding window of sequence_len // 2,
L = full causal; the last layer is always L. A window W admits key j for query i when
0 <= i - j <= W (what FlashAttention-3's window_size=(W, 0) admits). CUDA with compile uses
flex_attention with a block mask for windowed layers (skips fully masked tiles); everything else
uses scaled_dot_product_attention with is_causal or an explicit boolean mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from stagewise.model_size import MLP_EXPANSION, VE_GATE_CHANNELS, has_value_embedding

LOGIT_SOFTCAP = 15.0  # tanh cap on logits: keeps early training from blowing up the softmax
ROPE_BASE = 10_000.0
ROPE_LENGTH_FACTOR = 10  # precompute rotations for 10x the context, as autoresearch does


@dataclass(frozen=True)
class GPTConfig:
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    head_dim: int
    window_pattern: str = "SSSL"

    @property
    def n_embd(self) -> int:
        return self.n_head * self.head_dim

    @classmethod
    def from_train_config(cls, cfg: Any, vocab_size: int) -> GPTConfig:
        return cls(
            sequence_len=cfg.sequence_len,
            vocab_size=vocab_size,
            n_layer=cfg.depth,
            n_head=cfg.n_head,
            head_dim=cfg.head_dim,
            window_pattern=cfg.window_pattern,
        )


def window_sizes(config: GPTConfig) -> list[int]:
    """Per layer: how far back a query may look (sequence_len means plain causal)."""
    pattern = config.window_pattern.upper()
    long_window, short_window = config.sequence_len, config.sequence_len // 2
    sizes = [
        long_window if pattern[i % len(pattern)] == "L" else short_window
        for i in range(config.n_layer)
    ]
    sizes[-1] = long_window  # the last layer always sees the whole context
    return sizes


def norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) by position-dependent angles; x is (B, T, H, D)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def sliding_window_mask(seq_len: int, window: int, device: torch.device) -> torch.Tensor:
    """Boolean (T, T) mask, True where 0 <= i - j <= window."""
    idx = torch.arange(seq_len, device=device)
    diff = idx[:, None] - idx[None, :]
    return (diff >= 0) & (diff <= window)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        d = config.n_embd
        self.c_q = nn.Linear(d, d, bias=False)
        self.c_k = nn.Linear(d, d, bias=False)
        self.c_v = nn.Linear(d, d, bias=False)
        self.c_proj = nn.Linear(d, d, bias=False)
        self.ve_gate = (
            nn.Linear(VE_GATE_CHANNELS, self.n_head, bias=False)
            if has_value_embedding(layer_idx, config.n_layer)
            else None
        )

    def forward(
        self,
        x: torch.Tensor,
        ve: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: Any,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None and self.ve_gate is not None:
            # Value residual: add the value embedding, gated per head in (0, 2); zero-init -> 1.
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = norm(q), norm(k)
        dtype = v.dtype
        y = attend(q.to(dtype).transpose(1, 2), k.to(dtype).transpose(1, 2), v.transpose(1, 2))
        out: torch.Tensor = self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return out


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, MLP_EXPANSION * config.n_embd, bias=False)
        self.c_proj = nn.Linear(MLP_EXPANSION * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.c_proj(F.relu(self.c_fc(x)).square())
        return out


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        ve: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: Any,
    ) -> torch.Tensor:
        x = x + self.attn(norm(x), ve, cos, sin, attend)
        out: torch.Tensor = x + self.mlp(norm(x))
        return out


class GPT(nn.Module):
    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.window_sizes = window_sizes(config)
        d = config.n_embd
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, d),
                "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            }
        )
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        self.value_embeds = nn.ModuleDict(
            {
                str(i): nn.Embedding(config.vocab_size, d)
                for i in range(config.n_layer)
                if has_value_embedding(i, config.n_layer)
            }
        )
        cos, sin = self._rotary_tables(config.sequence_len * ROPE_LENGTH_FACTOR)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self._masks: dict[tuple[int, int], Any] = {}

    @property
    def wte(self) -> nn.Embedding:
        return cast(nn.Embedding, self.transformer["wte"])

    @property
    def blocks(self) -> list[Block]:
        return [cast(Block, b) for b in cast(nn.ModuleList, self.transformer["h"])]

    def value_embed_tables(self) -> list[nn.Embedding]:
        return [cast(nn.Embedding, ve) for ve in self.value_embeds.values()]

    def _rotary_tables(self, length: int, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        hd = self.config.head_dim
        inv_freq = 1.0 / ROPE_BASE ** (
            torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd
        )
        angles = torch.outer(torch.arange(length, dtype=torch.float32, device=device), inv_freq)
        return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]

    @torch.no_grad()
    def init_weights(self) -> None:
        """autoresearch's init: unit-variance embeddings, tiny lm_head, uniform matrices with the
        variance of N(0, 1/d), zero output projections (each block starts as the identity)."""
        d = self.config.n_embd
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
        bound = math.sqrt(3.0) * d**-0.5
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)  # 2*sigmoid(0) = 1: a neutral gate
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)
        for ve in self.value_embed_tables():
            nn.init.uniform_(ve.weight, -bound, bound)
        self.reset_rotary()

    @torch.no_grad()
    def reset_rotary(self) -> None:
        """Recompute the RoPE tables (buffers, not weights: meta init and loading skip them)."""
        cos, sin = self._rotary_tables(self.cos.size(1), device=self.cos.device)
        self.cos.copy_(cos)
        self.sin.copy_(sin)

    def cast_embeddings(self, dtype: torch.dtype) -> None:
        """Embedding tables in the compute dtype (bf16 halves their memory and optimizer state)."""
        self.wte.to(dtype=dtype)
        for ve in self.value_embed_tables():
            ve.to(dtype=dtype)

    def prepare_attention(self, seq_len: int, flex: bool = False) -> None:
        """Build the masks for rows of `seq_len` tokens up front, so a compiled forward only
        reads them. flex=True (CUDA + compile): flex_attention block masks, which skip tiles
        that are fully masked; otherwise boolean masks for scaled_dot_product_attention."""
        device = self.cos.device
        for window in sorted(set(self.window_sizes)):
            if window >= seq_len - 1:
                continue  # plain causal: no mask needed
            if flex:
                from torch.nn.attention.flex_attention import create_block_mask

                def mask_mod(b: Any, h: Any, q: Any, kv: Any, w: int = window) -> Any:
                    return (q >= kv) & (q - kv <= w)

                self._masks[(seq_len, window)] = create_block_mask(
                    mask_mod, B=None, H=None, Q_LEN=seq_len, KV_LEN=seq_len, device=device
                )
            else:
                self._masks[(seq_len, window)] = sliding_window_mask(seq_len, window, device)

    def _attention(self, T: int, window: int) -> Any:
        if window >= T - 1:  # the window covers the whole row: plain causal attention
            return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
        mask = self._masks.get((T, window))
        if mask is None:  # a row length nobody prepared for: an SDPA mask, built once
            mask = self._masks[(T, window)] = sliding_window_mask(T, window, self.cos.device)
        if isinstance(mask, torch.Tensor):
            return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        from torch.nn.attention.flex_attention import flex_attention

        return lambda q, k, v: flex_attention(q, k, v, block_mask=mask)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        T = idx.size(1)
        dtype = self.wte.weight.dtype
        cos, sin = self.cos[:, :T].to(dtype), self.sin[:, :T].to(dtype)
        x = norm(self.wte(idx))
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, self._attention(T, self.window_sizes[i]))
        x = norm(x)
        logits = self.lm_head(x).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)),
            targets.reshape(-1),
            ignore_index=-1,
            reduction=reduction,
        )

    # --- accounting ---
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> float:
        """FLOPs per token for forward + backward: 6 per matrix weight plus attention scores.

        Embedding lookups and scalars cost no matmul FLOPs; windowed layers attend to at most
        their window (the autoresearch convention, so MFU figures compare with its log)."""
        embeds = self.wte.weight.numel() + sum(
            ve.weight.numel() for ve in self.value_embed_tables()
        )
        scalars = self.resid_lambdas.numel() + self.x0_lambdas.numel()
        matmul_params = self.num_params() - embeds - scalars
        T = self.config.sequence_len
        attn = sum(
            12 * self.config.n_head * self.config.head_dim * min(w, T) for w in self.window_sizes
        )
        return float(6 * matmul_params + attn)
