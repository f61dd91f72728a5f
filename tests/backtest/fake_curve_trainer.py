"""A stand-in trainer for `stagewise curves` tests: val_bpb is a known function of the budget.

    fake_curve_trainer.py --final F --early E --budget B --seed S --journal FILE [--sleep X]

val_bpb = F + E / B + seed / 10000: a condition with a low F but a high E starts badly and ends
best, so rankings flip between budgets. Each start appends a line to the journal, so tests
can count executions (a resumed `curves` must not repeat a finished run).
"""

import argparse
import time

p = argparse.ArgumentParser()
p.add_argument("--final", type=float, required=True)
p.add_argument("--early", type=float, required=True)
p.add_argument("--budget", type=float, required=True)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--journal", required=True)
p.add_argument("--sleep", type=float, default=0.0)
a = p.parse_args()
with open(a.journal, "a") as f:
    f.write(f"{a.final} {a.early} {a.budget} {a.seed}\n")
time.sleep(a.sleep)
val = a.final + a.early / a.budget + a.seed / 10000
print("---")
print(f"val_bpb:          {val:.6f}")
print(f"training_seconds: {a.budget:.1f}")
print("num_steps:        3")
