"""A small character-level (byte-level) transformer, trained for a budget, reported to stagewise.

Your own trainer needs three things from stagewise, all in `stagewise.result`: the run's facts
(`run_facts()`: seed, budget, out folder, from STAGEWISE_* environment variables), and
`write_result(val_bpb=...)` at the end. Everything else here is ordinary PyTorch.

    python train.py --data DATA [--d-model 64] [--layers 2] [--lr 3e-3] [--seq-len 64]

DATA is a folder made by `stagewise data prepare --source sample --out DATA` (parquet shards of
text; the last shard is validation). Bytes are the characters (256 symbols), so the mean
cross-entropy in bits on held-out text *is* bits per byte: val_bpb, comparable across recipes.
Run by hand it trains for 10 s with seed 1 and writes ./run/summary.json.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from torch import nn

from stagewise.result import LossCurveWriter, run_facts, write_result

# ---------------------------------------------------------------------------- settings
p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--data", required=True, help="folder of shard_*.parquet (last one: validation)")
p.add_argument("--d-model", type=int, default=64)
p.add_argument("--layers", type=int, default=2)
p.add_argument("--heads", type=int, default=4)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--seq-len", type=int, default=64)
p.add_argument("--batch", type=int, default=16)
args = p.parse_args()

facts = run_facts()
SEED = facts.seed if facts.seed is not None else 1
OUT = facts.out or Path("run")
# One budget applies: tokens (bytes) or optimizer steps when the stage counts them, else seconds.
BUDGET_SECONDS = facts.budget_seconds or 10.0
TOKEN_BUDGET = facts.token_budget
STEP_BUDGET = facts.step_budget
EVAL_BYTES = 16_384  # fixed held-out text: every recipe is scored on the same bytes
WARMDOWN = 0.3  # the last 30% of the budget decays the LR linearly to 0
torch.manual_seed(SEED)
if os.environ.get("STAGEWISE_TORCH_THREADS"):  # the executor's share of the cores for this run
    torch.set_num_threads(int(os.environ["STAGEWISE_TORCH_THREADS"]))


# ---------------------------------------------------------------------------- data
def load_bytes(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    shards = sorted(folder.glob("shard_*.parquet"))
    if len(shards) < 2:
        raise SystemExit(f"{folder}: expected at least two shard_*.parquet (train + validation)")

    def read(paths: list[Path]) -> torch.Tensor:
        text = "\n".join(
            t for path in paths for t in pq.read_table(path).column("text").to_pylist()
        )
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()

    # One training shard (~1 MB of text) is plenty for seconds-long runs and loads in a blink.
    return read(shards[:1]), read(shards[-1:])


train_data, val_data = load_bytes(Path(args.data))
gen = torch.Generator().manual_seed(SEED)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(train_data) - args.seq_len - 1, (args.batch,), generator=gen)
    rows = torch.stack([train_data[s : s + args.seq_len + 1] for s in starts.tolist()])
    return rows[:, :-1], rows[:, 1:]


# ---------------------------------------------------------------------------- model
class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        att = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class ByteLM(nn.Module):
    def __init__(self, d: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, d)
        self.pos = nn.Parameter(torch.zeros(seq_len, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx) + self.pos[: idx.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


model = ByteLM(args.d_model, args.layers, args.heads, args.seq_len)
optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
num_params_M = sum(p.numel() for p in model.parameters()) / 1e6


# ---------------------------------------------------------------------------- loop
def progress_of(step: int, seconds: float) -> float:
    """Budget spent so far: tokens, steps or seconds over their target (drives the LR)."""
    if TOKEN_BUDGET is not None:
        return step * args.batch * args.seq_len / TOKEN_BUDGET
    if STEP_BUDGET is not None:
        return step / STEP_BUDGET
    return seconds / BUDGET_SECONDS


t_start = time.time()
step, training_seconds = 0, 0.0
# Optional: the per-step loss gives this trainer's runs learning curves in the report.
curve = LossCurveWriter(OUT)
while progress_of(step, training_seconds) < 1.0:
    t0 = time.time()
    frac = progress_of(step, training_seconds)
    lr_scale = min(1.0, (1.0 - frac) / WARMDOWN)
    for group in optimizer.param_groups:
        group["lr"] = args.lr * lr_scale
    x, y = batch()
    loss = F.cross_entropy(model(x).view(-1, 256), y.reshape(-1))
    if not math.isfinite(loss.item()):
        curve.close()
        write_result(val_bpb=float("nan"), out=OUT, num_steps=step)  # recorded as diverged
        raise SystemExit(3)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    step += 1
    training_seconds += time.time() - t0
    curve.log(
        step,
        loss.item(),
        training_seconds=training_seconds,
        tokens=step * args.batch * args.seq_len,
    )
    if step % 20 == 0:
        # Optional: a progress line drives stagewise's live view (progress in [0, 1]).
        left = min(1.0, progress_of(step, training_seconds))
        print(f"progress: step={step} progress={left:.4f} loss={loss.item():.6f}", flush=True)

curve.close()

# ---------------------------------------------------------------------------- evaluation
model.eval()
with torch.no_grad():
    held_out = val_data[: EVAL_BYTES + 1]
    n = (len(held_out) - 1) // args.seq_len * args.seq_len
    x = held_out[:n].view(-1, args.seq_len)
    y = held_out[1 : n + 1].view(-1, args.seq_len)
    nats = F.cross_entropy(model(x).view(-1, 256), y.reshape(-1)).item()
val_bpb = nats / math.log(2)  # one token is one byte

# ---------------------------------------------------------------------------- report
write_result(
    val_bpb=val_bpb,
    out=OUT,
    training_seconds=training_seconds,
    total_seconds=time.time() - t_start,
    total_tokens_M=step * args.batch * args.seq_len / 1e6,
    num_steps=step,
    num_params_M=num_params_M,
    depth=args.layers,
)
