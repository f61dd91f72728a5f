"""MuonAdamW: Muon for the transformer's matrices, AdamW for everything else (autoresearch).

Muon step for a group of same-shaped matrices (stacked, so one batched matmul chain serves all):
  1. Nesterov momentum on the gradient.
  2. Polar Express orthogonalisation: a few odd matrix polynomials (coefficients tuned per
     iteration) push all singular values towards 1, approximating U V^T of the update, in bf16.
  3. NorMuon variance reduction: a second-moment EMA per row (or column) of the orthogonalised
     update rescales rows to equal size, then the whole update is renormalised to keep its norm.
  4. Cautious weight decay: decay only the entries where update and weight agree in sign, with a
     decay coefficient the loop ramps to zero over the run.
The Muon LR is scaled by sqrt(max(1, rows/cols)) so tall matrices get a comparable step.
AdamW groups: lm_head, token and value embeddings, and the per-layer scalars.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# (a, b, c) of X <- a X + b (X X^T) X + c (X X^T)^2 X per iteration (Polar Express, 5 steps).
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
NS_STEPS = 5
# NorMuon second-moment EMA. Kept in float32 in both the eager and the compiled step: that is
# what autoresearch's compiled kernel uses (its `beta2_t.to(bf16)` is fused away); only its
# eager kernel would round it to 0.94921875 (pinned by tests/runner/test_golden.py).
MUON_BETA2 = 0.95
ADAM_EPS = 1e-10  # tiny: embeddings see sparse, small gradients
REFERENCE_DIM = 768  # AdamW LRs were tuned at model_dim 768; scale by 1/sqrt(d/768)
RESID_LR_FACTOR = 0.01  # residual scalars move 100x slower than the x0 scalars
X0_BETAS = (0.96, 0.95)  # x0 scalars: smoother first moment


def adamw_update(
    p: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    step: torch.Tensor,
    lr: torch.Tensor,
    beta1: torch.Tensor,
    beta2: torch.Tensor,
    eps: torch.Tensor,
    wd: torch.Tensor,
) -> None:
    p.mul_(1 - lr * wd)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    denom = (exp_avg_sq / (1 - beta2**step)).sqrt() + eps
    p.add_(exp_avg / denom * (-lr / (1 - beta1**step)))


def orthogonalise(g: torch.Tensor, steps: int, dtype: torch.dtype) -> torch.Tensor:
    """Polar Express on a stack of matrices (..., m, n); works on the smaller Gram matrix."""
    x = g.to(dtype)
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # spectral norm now <= 1
    tall = g.size(-2) > g.size(-1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        if tall:
            gram = x.mT @ x
            x = a * x + x @ (b * gram + c * (gram @ gram))
        else:
            gram = x @ x.mT
            x = a * x + (b * gram + c * (gram @ gram)) @ x
    result: torch.Tensor = x
    return result


def muon_update(
    grads: torch.Tensor,
    params: torch.Tensor,
    momentum_buf: torch.Tensor,
    second_buf: torch.Tensor,
    momentum: torch.Tensor,
    lr: torch.Tensor,
    wd: torch.Tensor,
    beta2: torch.Tensor,
    ns_steps: int,
    red_dim: int,
    ortho_dtype: torch.dtype,
) -> None:
    # 1. Nesterov momentum
    mom = momentum.to(grads.dtype)
    momentum_buf.lerp_(grads, 1 - mom)
    g = grads.lerp_(momentum_buf, mom)
    # 2. orthogonalise
    g = orthogonalise(g, ns_steps, ortho_dtype)
    # 3. NorMuon: equalise row (or column) norms with an EMA of their mean square, keep the norm
    v_mean = g.float().square().mean(dim=red_dim, keepdim=True)
    red_size = g.size(red_dim)
    norm_before = (v_mean.sum(dim=(-2, -1), keepdim=True) * red_size).sqrt()
    # beta2 in float32, never through g's bf16 (see MUON_BETA2)
    second_buf.lerp_(v_mean.to(second_buf.dtype), 1 - beta2.float().to(second_buf.dtype))
    scale = second_buf.clamp_min(1e-10).rsqrt()
    norm_after = (
        ((v_mean * red_size) * scale.float().square()).sum(dim=(-2, -1), keepdim=True).sqrt()
    )
    g = g * (scale * (norm_before / norm_after.clamp_min(1e-10))).to(g.dtype)
    # 4. cautious weight decay + update
    lr_, wd_ = lr.to(g.dtype), wd.to(g.dtype)
    agree = (g * params) >= 0
    params.sub_(lr_ * g + lr_ * wd_ * params * agree)


class MuonAdamW:
    """Groups carry kind='muon' (same-shaped matrices) or kind='adamw'.

    A plain class rather than a torch.optim.Optimizer subclass: that base class imports
    torch._dynamo on construction (over a second of start-up on a small CPU), and the runner
    needs none of its machinery (no closures, hooks or optimizer-state checkpoints).
    """

    def __init__(
        self,
        param_groups: list[dict[str, Any]],
        compile_steps: bool = False,
        ortho_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        self.param_groups = param_groups
        self.state: dict[torch.Tensor, dict[str, Any]] = {}
        self.ortho_dtype = ortho_dtype
        self._adamw: Callable[..., None] = adamw_update
        self._muon: Callable[..., None] = muon_update
        if compile_steps:
            # 0-dim CPU tensors below carry the changing scalars, so one graph serves all steps.
            self._adamw = torch.compile(adamw_update, dynamic=False, fullgraph=True)
            self._muon = torch.compile(muon_update, dynamic=False, fullgraph=True)
        self._t = {
            name: torch.tensor(0.0)
            for name in ("step", "lr", "beta1", "beta2", "eps", "wd", "momentum")
        }

    def _scalars(self, **values: float) -> list[torch.Tensor]:
        out = []
        for name, value in values.items():
            self._t[name].fill_(value)
            out.append(self._t[name])
        return out

    def _step_adamw(self, group: dict[str, Any]) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.setdefault(p, {})
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            beta1, beta2 = group["betas"]
            step, lr, b1, b2, eps, wd = self._scalars(
                step=state["step"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                wd=group["weight_decay"],
            )
            self._adamw(p, p.grad, state["exp_avg"], state["exp_avg_sq"], step, lr, b1, b2, eps, wd)

    def _step_muon(self, group: dict[str, Any]) -> None:
        params: Sequence[torch.Tensor] = group["params"]
        if not params or any(p.grad is None for p in params):
            return
        first = params[0]
        rows, cols = first.shape[-2], first.shape[-1]
        state = self.state.setdefault(first, {})
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros(
                len(params), rows, cols, dtype=first.dtype, device=first.device
            )
            # NorMuon statistics along the longer side: one entry per row of a tall matrix.
            shape = (len(params), rows, 1) if rows >= cols else (len(params), 1, cols)
            state["second_momentum_buffer"] = torch.zeros(
                shape, dtype=first.dtype, device=first.device
            )
        red_dim = -1 if rows >= cols else -2
        grads = torch.stack([p.grad for p in params])  # type: ignore[misc]
        stacked = torch.stack(list(params))
        momentum, lr, wd, beta2 = self._scalars(
            momentum=group["momentum"],
            lr=group["lr"] * max(1.0, rows / cols) ** 0.5,
            wd=group["weight_decay"],
            beta2=group["beta2"],
        )
        self._muon(
            grads,
            stacked,
            state["momentum_buffer"],
            state["second_momentum_buffer"],
            momentum,
            lr,
            wd,
            beta2,
            group["ns_steps"],
            red_dim,
            self.ortho_dtype,
        )
        torch._foreach_copy_(list(params), list(stacked.unbind(0)))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            if group["kind"] == "adamw":
                self._step_adamw(group)
            else:
                self._step_muon(group)


def build_optimizer(
    model: Any, cfg: Any, compile_steps: bool = False, ortho_dtype: torch.dtype = torch.bfloat16
) -> MuonAdamW:
    """autoresearch's parameter groups and LR scaling for a `GPT` and a `TrainConfig`."""
    d = model.config.n_embd
    scale = (d / REFERENCE_DIM) ** -0.5
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    matrices = list(model.transformer.h.parameters())

    def adamw(
        params: list[torch.Tensor], lr: float, group_betas: tuple[float, float] = betas
    ) -> dict[str, Any]:
        return {
            "kind": "adamw",
            "params": params,
            "lr": lr,
            "betas": group_betas,
            "eps": ADAM_EPS,
            "weight_decay": 0.0,
        }

    groups = [
        adamw(list(model.lm_head.parameters()), cfg.unembedding_lr * scale),
        adamw(list(model.transformer.wte.parameters()), cfg.embedding_lr * scale),
        adamw(list(model.value_embeds.parameters()), cfg.embedding_lr * scale),
        adamw([model.resid_lambdas], cfg.scalar_lr * RESID_LR_FACTOR),
        adamw([model.x0_lambdas], cfg.scalar_lr, X0_BETAS),
    ]
    for shape in sorted({tuple(p.shape) for p in matrices}):
        groups.append(
            {
                "kind": "muon",
                "params": [p for p in matrices if tuple(p.shape) == shape],
                "lr": cfg.matrix_lr,
                "momentum": 0.95,
                "ns_steps": NS_STEPS,
                "beta2": MUON_BETA2,
                "weight_decay": cfg.weight_decay,
            }
        )
    groups = [g for g in groups if g["params"]]  # depth-1 models may lack value embeddings
    n_grouped = sum(len(g["params"]) for g in groups)
    assert n_grouped == len(list(model.parameters())), "every parameter needs exactly one group"
    optimizer = MuonAdamW(groups, compile_steps=compile_steps, ortho_dtype=ortho_dtype)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    return optimizer
