"""Evaluation time per val_bpb: the training batch (the baseline, as autoresearch) against the
batch `stagewise.runner.eval_batch.choose` sizes for the device, and every other divisor.

For each (vocab, sequence length, training batch) of the grid, one freshly initialised model
is evaluated over the same validation rows at each batch size; best of --repeat timings.
Printed: seconds per size, the chosen size, and chosen / baseline (< 1 = faster); the bpb of
every size must agree to 1e-5 (same rows, different summation order).

    .venv/bin/python benchmarks/bench_eval_batch.py                       # CPU grid, 2 threads
    .venv/bin/python benchmarks/bench_eval_batch.py --device cuda --depth 8 --aspect-ratio 64 \
        --grid 8192:2048:32 --eval-steps 20     # GPU: memory-sized batch vs the training batch
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any


def timed_eval(
    model: Any, setup: Any, data: Path, seq: int, rows: int, size: int, token_bytes: Any
) -> tuple[float, float]:
    from stagewise.data.loader import make_loader
    from stagewise.data.metric import evaluate_bpb

    loader = make_loader(data, "val", size, seq, setup.device)
    setup.synchronize()
    t0 = time.perf_counter()
    with setup.autocast_ctx():
        bpb = evaluate_bpb(
            lambda a, b: model(a, b, reduction="none"), loader, rows // size, token_bytes
        )
    setup.synchronize()
    return time.perf_counter() - t0, bpb


def training_row_bytes(model: Any, setup: Any, data: Path, seq: int, train_rows: int) -> float:
    """What one training row needs at the peak of a forward/backward (CUDA), as the runner sees."""
    import torch

    from stagewise.data.loader import make_loader

    x, y, _ = next(make_loader(data, "train", train_rows, seq, setup.device))
    torch.cuda.reset_peak_memory_stats(setup.device)
    with setup.autocast_ctx():
        model(x, y).backward()
    model.zero_grad(set_to_none=True)
    held = torch.cuda.memory_allocated(setup.device)
    return (torch.cuda.max_memory_allocated(setup.device) - held) / train_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grid",
        nargs="+",
        default=["512:128:8", "512:512:32", "512:2048:16", "8192:128:32", "8192:512:16"],
        help="VOCAB:SEQ:TRAIN_ROWS entries (default: the CPU grid of docs/benchmarks.md)",
    )
    parser.add_argument("--eval-steps", type=int, default=8, help="batches of the training batch")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--aspect-ratio", type=int, default=64)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import torch

    from stagewise.bounds import divisors, eval_rows
    from stagewise.data.loader import TOKENIZER_DIR
    from stagewise.data.prepare import prepare
    from stagewise.data.tokenizer import load_token_bytes
    from stagewise.runner.config import TrainConfig
    from stagewise.runner.device import setup_device
    from stagewise.runner.eval_batch import choose
    from stagewise.runner.loop import build_model

    torch.set_num_threads(args.threads)
    setup = setup_device(args.device, False)
    print(f"device: {setup.name}, threads {args.threads}, best of {args.repeat}")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        prepared: dict[int, Path] = {}
        for entry in args.grid:
            vocab, seq, train_rows = (int(v) for v in entry.split(":"))
            if vocab not in prepared:
                prepared[vocab] = Path(tmp) / f"v{vocab}"
                prepare("sample", prepared[vocab], vocab_size=vocab)
            data = prepared[vocab]
            token_bytes = torch.from_numpy(
                load_token_bytes(data / TOKENIZER_DIR).astype(np.int64)
            ).to(setup.device)
            cfg = TrainConfig(
                depth=args.depth,
                aspect_ratio=args.aspect_ratio,
                head_dim=args.head_dim,
                sequence_len=seq,
                device_batch_size=train_rows,
                total_batch_size=train_rows * seq,
                eval_tokens=args.eval_steps * train_rows * seq,
                window_pattern="SL",
                device=args.device,
            )
            torch.manual_seed(0)
            model = build_model(cfg, vocab, setup)
            rows = eval_rows(cfg.eval_tokens, train_rows, seq)
            memory: dict[str, float] = {}
            if setup.kind == "cuda":
                memory["row_bytes"] = training_row_bytes(model, setup, data, seq, train_rows)
                free, _ = torch.cuda.mem_get_info(setup.device)
                reserved = torch.cuda.memory_reserved(setup.device)
                memory["free_bytes"] = free + reserved - torch.cuda.memory_allocated(setup.device)
            model.eval()
            chosen = choose(rows, train_rows, seq, vocab, kind=setup.kind, **memory).rows
            sizes = sorted({d for d in divisors(rows) if d <= 4 * max(train_rows, chosen)})
            seconds, bpbs = {}, {}
            for size in sizes:
                runs = [
                    timed_eval(model, setup, data, seq, rows, size, token_bytes)
                    for _ in range(args.repeat)
                ]
                seconds[size] = min(t for t, _ in runs)
                bpbs[size] = runs[0][1]
            spread = max(bpbs.values()) - min(bpbs.values())
            assert spread < 1e-5, f"bpb differs across batch sizes by {spread}"
            ratio = seconds[chosen] / seconds[train_rows]
            ratios.append(ratio)
            cells = "  ".join(f"{s}:{seconds[s]:.3f}s" for s in sizes)
            print(
                f"vocab {vocab:5d} seq {seq:5d} train batch {train_rows:4d} -> chosen {chosen:4d}"
                f"  chosen/train = {ratio:.2f}  ({cells})"
            )
    geo = float(np.exp(np.mean(np.log(ratios))))
    print(f"geometric mean chosen/train over {len(ratios)} shapes: {geo:.2f}")


if __name__ == "__main__":
    main()
