"""A tiny stand-in trainer for walk tests: reads its run's facts from the environment and
reports through stagewise.result, as a user's own trainer would.

    trainer.py --score S --sleep X --journal FILE

val_bpb = score + seed / 1000, so the ranking is the matrix's; a negative score crashes. Each start appends
"start <stage>/<condition>/<seed>/<host> <pid>" to the journal and each finished run "end ...".
"""

import argparse
import os
import time

from stagewise.result import run_facts, write_result

p = argparse.ArgumentParser()
p.add_argument("--score", type=float, required=True)
p.add_argument("--sleep", type=float, default=0.2)
p.add_argument("--journal", required=True)
a = p.parse_args()
facts = run_facts()
key = f"{facts.stage}/{facts.condition_id}/{facts.seed}/{facts.host}"


def journal(text: str) -> None:
    with open(a.journal, "a") as f:
        f.write(text + "\n")


journal(f"start {key} {os.getpid()}")
steps = 4
for step in range(1, steps + 1):
    time.sleep(a.sleep / steps)
    print(f"progress: step={step} progress={step / steps:.4f} loss={5.0 - step:.6f}", flush=True)
if a.score < 0:  # how a test asks for a crashed run
    print("Traceback: the trainer crashed", flush=True)
    raise SystemExit(1)
assert facts.seed is not None and facts.budget_seconds is not None
write_result(
    val_bpb=a.score + facts.seed / 1000,
    training_seconds=a.sleep,
    num_steps=steps,
    budget_seen=facts.budget_seconds,
)
journal(f"end {key}")
