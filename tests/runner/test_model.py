"""The model against an independent, loop-level computation of the same architecture."""

from __future__ import annotations

import cmath
import math

import pytest
import torch

from stagewise.runner.model import GPT, GPTConfig, sliding_window_mask, window_sizes

CFG = GPTConfig(
    sequence_len=16, vocab_size=64, n_layer=3, n_head=3, head_dim=16, window_pattern="SL"
)


def _model(cfg: GPTConfig = CFG) -> GPT:
    torch.manual_seed(0)
    model = GPT(cfg)
    model.init_weights()
    with torch.no_grad():  # init zeroes projections and gates; randomise so every path counts
        for name, p in model.named_parameters():
            if p.ndim == 2 and "wte" not in name and "value_embeds" not in name:
                p.normal_(0, 0.2)
        model.resid_lambdas.uniform_(0.5, 1.5)
        model.x0_lambdas.uniform_(-0.5, 0.5)
        model.lm_head.weight.normal_(0, 1.0)
    return model


def reference_logits(model: GPT, idx: list[int]) -> list[list[float]]:
    """Forward for one sequence, in float64, written from the architecture's description."""
    sd = {k: v.double() for k, v in model.state_dict().items()}
    cfg = model.config
    T, H, D, L = len(idx), cfg.n_head, cfg.head_dim, cfg.n_layer
    eps = torch.finfo(torch.float32).eps

    def rms(x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)

    def rope(v: torch.Tensor, t: int) -> torch.Tensor:
        # Channel pair (i, i + D/2) as a complex number, rotated by -t * base^(-2i/D).
        out = v.clone()
        for i in range(D // 2):
            z = complex(v[i], v[i + D // 2]) * cmath.exp(-1j * t * 10000 ** (-2 * i / D))
            out[i], out[i + D // 2] = z.real, z.imag
        return out

    window = [
        cfg.sequence_len // 2
        if cfg.window_pattern[i % len(cfg.window_pattern)] == "S"
        else cfg.sequence_len
        for i in range(L)
    ]
    window[-1] = cfg.sequence_len
    x0 = rms(sd["transformer.wte.weight"][idx])
    x = x0
    for layer in range(L):
        p = f"transformer.h.{layer}."
        x = sd["resid_lambdas"][layer] * x + sd["x0_lambdas"][layer] * x0
        h = rms(x)
        q, k, v = (h @ sd[p + f"attn.c_{n}.weight"].T for n in "qkv")
        if f"value_embeds.{layer}.weight" in sd:
            ve = sd[f"value_embeds.{layer}.weight"][idx]
            gate = 2 * torch.sigmoid(h[:, :32] @ sd[p + "attn.ve_gate.weight"].T)  # (T, H)
            v = v + (gate[:, :, None] * ve.view(T, H, D)).reshape(T, H * D)
        y = torch.zeros(T, H * D, dtype=torch.float64)
        for head in range(H):
            s = slice(head * D, (head + 1) * D)
            qs = [rms(rope(q[t, s], t)) for t in range(T)]
            ks = [rms(rope(k[t, s], t)) for t in range(T)]
            for i in range(T):
                allowed = [j for j in range(T) if 0 <= i - j <= window[layer]]
                scores = torch.tensor([float(qs[i] @ ks[j]) / math.sqrt(D) for j in allowed])
                weights = torch.softmax(scores, 0)
                y[i, s] = sum(w * v[j, s] for w, j in zip(weights, allowed, strict=True))
        x = x + y @ sd[p + "attn.c_proj.weight"].T
        h = rms(x)
        x = x + torch.relu(h @ sd[p + "mlp.c_fc.weight"].T) ** 2 @ sd[p + "mlp.c_proj.weight"].T
    logits = rms(x) @ sd["lm_head.weight"].T
    return (15 * torch.tanh(logits / 15)).tolist()


def test_forward_matches_reference() -> None:
    model = _model()
    idx = [(7 * t + 3) % CFG.vocab_size for t in range(CFG.sequence_len)]
    with torch.no_grad():
        ours = model(torch.tensor([idx]))[0].double()
    ref = torch.tensor(reference_logits(model, idx), dtype=torch.float64)
    assert ours.shape == ref.shape == (16, 64)
    assert (ref.abs() > 1).any()  # a meaningful comparison, not all near zero
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_loss_matches_logits() -> None:
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))
    tgt = torch.randint(0, CFG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(idx)
        per_token = model(idx, tgt, reduction="none")
        mean = model(idx, tgt)
    expected = torch.nn.functional.cross_entropy(
        logits.view(-1, 64), tgt.view(-1), reduction="none"
    )
    torch.testing.assert_close(per_token, expected)
    torch.testing.assert_close(mean, expected.mean())


def test_window_sizes() -> None:
    cfg = GPTConfig(sequence_len=128, vocab_size=300, n_layer=5, n_head=1, head_dim=32)
    assert window_sizes(cfg) == [64, 64, 64, 128, 128]  # SSSL cycled, last forced to L
    one = GPTConfig(sequence_len=128, vocab_size=300, n_layer=1, n_head=1, head_dim=32)
    assert window_sizes(one) == [128]  # a single layer is the last layer: full context


def test_sliding_window_mask() -> None:
    m = sliding_window_mask(5, 2, torch.device("cpu"))
    for i in range(5):
        for j in range(5):
            assert bool(m[i, j]) == (0 <= i - j <= 2)


def test_depth_one_trains_a_step() -> None:
    cfg = GPTConfig(sequence_len=8, vocab_size=300, n_layer=1, n_head=1, head_dim=32)
    model = GPT(cfg)
    model.init_weights()
    loss = model(torch.zeros(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long))
    loss.backward()
    assert math.isfinite(loss.item())


@pytest.mark.filterwarnings("ignore")  # flex_attention warns that eager mode is unfused
def test_flex_block_mask_matches_sdpa_mask_on_cpu() -> None:
    """The CUDA path's block masks admit exactly the keys the SDPA masks admit (forward only:
    flex_attention has no CPU backward)."""
    cfg = GPTConfig(sequence_len=256, vocab_size=512, n_layer=2, n_head=1, head_dim=64)
    model = _model(cfg)
    idx = torch.randint(0, 512, (1, 256), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.prepare_attention(256, flex=False)
        sdpa = model(idx)
        model._masks.clear()
        model.prepare_attention(256, flex=True)
        assert not isinstance(model._masks[(256, 128)], torch.Tensor)
        flex = model(idx)
    torch.testing.assert_close(flex, sdpa, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flex_attention needs a CUDA GPU")
def test_flex_attention_matches_sdpa_on_cuda() -> None:
    cfg = GPTConfig(sequence_len=256, vocab_size=512, n_layer=4, n_head=2, head_dim=64)
    model = _model(cfg).cuda()
    idx = torch.randint(0, 512, (2, 256), device="cuda")
    with torch.no_grad():
        model.prepare_attention(256, flex=False)
        sdpa = model(idx)
        model._masks.clear()
        model.prepare_attention(256, flex=True)
        flex = torch.compile(model)(idx)
    torch.testing.assert_close(flex, sdpa, atol=2e-3, rtol=2e-3)
