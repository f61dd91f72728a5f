from __future__ import annotations

import pytest
import torch

from stagewise.errors import RunnerError
from stagewise.runner.config import TrainConfig, config_sha256, parse_budget
from stagewise.runner.loop import lr_multiplier, muon_momentum, weight_decay
from stagewise.runner.model import GPT, GPTConfig
from stagewise.runner.optim import build_optimizer, orthogonalise


def test_defaults_are_autoresearch() -> None:
    c = TrainConfig()
    assert (c.depth, c.aspect_ratio, c.head_dim, c.window_pattern) == (8, 64, 128, "SSSL")
    assert (c.total_batch_size, c.device_batch_size, c.sequence_len) == (2**19, 128, 2048)
    assert (c.matrix_lr, c.embedding_lr, c.unembedding_lr, c.scalar_lr) == (0.04, 0.6, 0.004, 0.5)
    assert (c.weight_decay, c.adam_beta1, c.adam_beta2) == (0.2, 0.8, 0.95)
    assert (c.warmup_ratio, c.warmdown_ratio, c.final_lr_frac) == (0.0, 0.5, 0.0)
    assert c.eval_tokens == 40 * 524288 and c.time_budget == 300
    assert c.grad_accum_steps == 2 and c.model_dim == 512 and c.n_head == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"total_batch_size": 1000}, "must be a multiple of device_batch_size"),
        ({"window_pattern": "SXL"}, "window_pattern must be a non-empty string of S and L"),
        ({"depth": 0}, "depth must be a positive integer, but got depth=0"),
        ({"warmup_ratio": 0.6, "warmdown_ratio": 0.6}, "warmup_ratio \\+ warmdown_ratio"),
        ({"deterministic": True}, "--deterministic needs --steps"),
        ({"steps": 5}, "only valid with --deterministic"),
        ({"device": "tpu"}, "device must be"),
        ({"eval_tokens": 10}, "eval_tokens=10 must be at least"),
        ({"matrix_lr": float("nan")}, "matrix_lr must be a finite number"),
    ],
)
def test_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(RunnerError, match=message):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_hash_is_canonical_and_ignores_out() -> None:
    a = TrainConfig(seed=1, out="x")
    assert config_sha256(a) == config_sha256(a.replace(out="y"))
    assert config_sha256(a) != config_sha256(a.replace(seed=2))
    assert config_sha256(a) == config_sha256(TrainConfig.from_dict(a.to_dict()))


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(RunnerError, match="unknown config keys: colour"):
        TrainConfig.from_dict({"colour": "blue"})


def test_budget_units() -> None:
    assert parse_budget("4s") == 4 and parse_budget("10m") == 600 and parse_budget("12h") == 43200
    assert parse_budget("300") == 300
    with pytest.raises(RunnerError, match="--time-budget"):
        parse_budget("soon")


def test_schedules() -> None:
    c = TrainConfig(warmup_ratio=0.1, warmdown_ratio=0.5, final_lr_frac=0.1, weight_decay=0.2)
    assert lr_multiplier(0.05, c) == pytest.approx(0.5)
    assert lr_multiplier(0.3, c) == 1.0
    assert lr_multiplier(0.75, c) == pytest.approx(0.5 + 0.5 * 0.1)
    assert lr_multiplier(1.0, c) == pytest.approx(0.1)
    assert weight_decay(0.25, c) == pytest.approx(0.15)
    assert muon_momentum(0) == 0.85 and muon_momentum(150) == pytest.approx(0.9)
    assert muon_momentum(1000) == 0.95


def test_orthogonalise_flattens_singular_values() -> None:
    g = torch.randn(3, 64, 32, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(orthogonalise(g, 5, torch.float32))
    assert s.min() > 0.6 and s.max() < 1.25  # Polar Express lands near 1, not exactly on it
    s_wide = torch.linalg.svdvals(orthogonalise(g.mT, 5, torch.float32))
    torch.testing.assert_close(s_wide, s, atol=1e-4, rtol=1e-4)


def test_parameter_groups_and_lr_scaling() -> None:
    cfg = TrainConfig(depth=2, aspect_ratio=96, head_dim=64)
    model = GPT(GPTConfig.from_train_config(cfg, 512))
    opt = build_optimizer(model, cfg, ortho_dtype=torch.float32)
    scale = (cfg.model_dim / 768) ** -0.5
    adam = [g for g in opt.param_groups if g["kind"] == "adamw"]
    assert adam[0]["params"][0] is model.lm_head.weight
    assert adam[0]["lr"] == pytest.approx(0.004 * scale)
    assert adam[1]["lr"] == pytest.approx(0.6 * scale)
    assert adam[3]["lr"] == pytest.approx(0.005) and adam[4]["betas"] == (0.96, 0.95)
    muon = [g for g in opt.param_groups if g["kind"] == "muon"]
    assert all(len({tuple(p.shape) for p in g["params"]}) == 1 for g in muon)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    assert {g["kind"] for g in opt.param_groups} == {"adamw", "muon"}
    assert all(g["lr"] > 0 for g in opt.param_groups)


def test_optimizer_step_reduces_loss() -> None:
    torch.manual_seed(0)
    cfg = TrainConfig(depth=2, aspect_ratio=32, head_dim=32, sequence_len=16)
    model = GPT(GPTConfig.from_train_config(cfg, 300))
    model.init_weights()
    opt = build_optimizer(model, cfg, ortho_dtype=torch.float32)
    for g in opt.param_groups:
        g["momentum"] = 0.9
    x = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(10):
        loss = model(x, x.roll(-1, 1))
        loss.backward()
        opt.step()
        model.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
