"""CPU training throughput (tokens/s) of a small config: eager vs torch.compile, fp32 vs bf16.

Each variant trains the same model from the same seed on the same batches (forward, backward,
MuonAdamW step), after warm-up steps that absorb compilation; compile time is reported apart.

    .venv/bin/python benchmarks/bench_cpu_train.py
    .venv/bin/python benchmarks/bench_cpu_train.py --depth 4 --aspect-ratio 64 --seq-len 256
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

# As the runner does for CPU compile: no background compile workers stealing the few cores.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

from stagewise.data.loader import make_loader
from stagewise.data.prepare import prepare, read_manifest
from stagewise.runner.config import TrainConfig
from stagewise.runner.device import cpu_has_native_bf16, set_threads
from stagewise.runner.model import GPT, GPTConfig
from stagewise.runner.optim import build_optimizer


def run(
    cfg: TrainConfig, data: Path, vocab: int, bf16: bool, compiled: bool, warmup: int, steps: int
) -> dict[str, Any]:
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_train_config(cfg, vocab))
    model.init_weights()
    if bf16:
        model.cast_embeddings(torch.bfloat16)
    model.prepare_attention(cfg.sequence_len)
    opt = build_optimizer(model, cfg, ortho_dtype=torch.bfloat16 if bf16 else torch.float32)
    for group in opt.param_groups:
        group["momentum"] = 0.95
    fwd = torch.compile(model, dynamic=False) if compiled else model
    loader = make_loader(data, "train", cfg.device_batch_size, cfg.sequence_len)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext

    def step() -> float:
        x, y, _ = next(loader)
        with ctx():
            loss = fwd(x, y)
        loss.backward()
        opt.step()
        model.zero_grad(set_to_none=True)
        return float(loss.item())

    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    t_warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    dt = time.perf_counter() - t0
    tokens = steps * cfg.device_batch_size * cfg.sequence_len
    return {"tok_s": tokens / dt, "warmup_s": t_warm, "loss": loss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--aspect-ratio", type=int, default=64)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    set_threads()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = Path(tmp.name)
        prepare("sample", args.data, vocab_size=1024)
    vocab = int(read_manifest(args.data)["vocab_size"])
    cfg = TrainConfig(
        depth=args.depth,
        aspect_ratio=args.aspect_ratio,
        head_dim=args.head_dim,
        sequence_len=args.seq_len,
        device_batch_size=args.batch,
        total_batch_size=args.batch * args.seq_len,
        device="cpu",
    )
    print(
        f"depth={cfg.depth} model_dim={cfg.model_dim} heads={cfg.n_head} vocab={vocab} "
        f"seq={cfg.sequence_len} batch={cfg.device_batch_size} threads={torch.get_num_threads()} "
        f"native_bf16={cpu_has_native_bf16()} torch={torch.__version__}"
    )
    results = {}
    for bf16 in (False, True):
        for compiled in (False, True):
            name = f"{'compiled' if compiled else 'eager'}-{'bf16' if bf16 else 'fp32'}"
            r = run(cfg, args.data, vocab, bf16, compiled, args.warmup, args.steps)
            results[name] = r
            print(
                f"{name:14s} {r['tok_s']:10,.0f} tok/s   warm-up {r['warmup_s']:5.1f}s   "
                f"loss {r['loss']:.3f}"
            )
    for precision in ("fp32", "bf16"):
        ratio = results[f"compiled-{precision}"]["tok_s"] / results[f"eager-{precision}"]["tok_s"]
        print(f"compiled / eager ({precision}): {ratio:.2f}x")
    ratio = results["eager-bf16"]["tok_s"] / results["eager-fp32"]["tok_s"]
    print(f"eager bf16 / fp32: {ratio:.2f}x")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
