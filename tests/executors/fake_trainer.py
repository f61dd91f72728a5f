"""A stand-in trainer for executor tests, driven through a study's argv template.

    fake_trainer.py --mode M --out DIR --seed S --key K --journal FILE [--sleep X] [--batch B]

Modes (numbers, because matrix parameters are numeric): 0 ok (prints progress and an
autoresearch `---` block), 1 NaN (`val_bpb: nan`), 2 crash (exit 1), 3 hang (never ends),
4 OOM above a device batch of 4, 5 flaky (crashes on its first attempt only), 6 writes a
summary.json like our runner. Each start appends "start <key> <pid>" to the journal and each
clean end "end <key>", so tests can count executions.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--mode", type=float, default=0)
p.add_argument("--out", required=True)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--key", default="?")
p.add_argument("--journal", required=True)
p.add_argument("--sleep", type=float, default=0.3)
p.add_argument("--batch", type=float, default=16)
a = p.parse_args()
mode = int(a.mode)


def journal(text):
    with open(a.journal, "a") as f:
        f.write(text + "\n")


journal(f"start {a.key} {os.getpid()}")
steps = 3
for step in range(1, steps + 1):
    time.sleep(a.sleep / steps)
    loss = float("nan") if mode == 1 and step == steps else 5.0 - step
    print(
        f"progress: step={step} progress={step / steps:.4f} loss={loss:.6f} "
        f"tok_per_s=1000.0 mfu=nan remaining_s={a.sleep * (steps - step) / steps:.1f}",
        flush=True,
    )
if mode == 2:
    print("Traceback: something broke", flush=True)
    sys.exit(1)
if mode == 3:
    time.sleep(3600)
if mode == 4 and a.batch > 4:
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", flush=True)
    sys.exit(1)
if mode == 5:
    marker = Path(a.out).parent / "flaky.marker"
    if not marker.exists():
        marker.write_text("x")
        print("transient failure", flush=True)
        sys.exit(1)
val = float("nan") if mode == 1 else 2.0 + a.seed / 100 + a.batch / 1000
if mode == 6:
    Path(a.out).mkdir(parents=True, exist_ok=True)
    summary = {
        "status": "succeeded",
        "cause": None,
        "val_bpb": val,
        "num_steps": steps,
        "training_seconds": a.sleep,
        "checkpoint_path": str(Path(a.out) / "model.bin"),
        "checkpoint_sha256": "0" * 64,
    }
    (Path(a.out) / "summary.json").write_text(json.dumps(summary))
print("---")
print(f"val_bpb:          {val:.6f}" if math.isfinite(val) else "val_bpb:          nan")
print(f"training_seconds: {a.sleep:.1f}")
print(f"num_steps:        {steps}")
print("depth:            2")
journal(f"end {a.key}")
