"""Verdict-confidence cost at a gate: intervals plus replicate verdicts, by gate size.

A synthetic gate of the paper06 example's 12 conditions on HOSTS x SEEDS cells (noise sd 0.005
around evenly spaced means) is evaluated with the gate's own rules, then `verdict_confidence`
resamples it (2,000 interval replicates; up to 1,000 judged replicates, fewer on large gates).

    .venv/bin/python benchmarks/bench_confidence.py
    .venv/bin/python benchmarks/bench_confidence.py --gate g12h --layouts 2x2,6x4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stagewise.analysis.cells import StageCells, pool_cells
from stagewise.create import init_study
from stagewise.gates.confidence import verdict_confidence
from stagewise.gates.evaluate import evaluate_pool


@dataclass(frozen=True)
class Rec:
    stage: str
    condition_id: str
    seed: int
    host: str
    val_bpb: float
    status: str = "succeeded"
    training_seconds: float | None = 60.0
    total_tokens_M: float | None = 1.0
    num_params_M: float | None = 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gate", default="g10", help="paper06 gate whose rules judge (g10, g12h)")
    ap.add_argument("--layouts", default="2x2,4x4,10x10", help="HOSTSxSEEDS, comma-separated")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        study = init_study(Path(tmp) / "p", "paper06")
        gate = study.gates[args.gate]
        conds = list(study.condition_ids)
        for layout in args.layouts.split(","):
            hosts, seeds = (int(x) for x in layout.split("x"))
            rng = np.random.default_rng(0)
            runs = [
                Rec("stage3", c, s, f"h{h}", 0.93 + 0.01 * i + float(rng.normal(0, 0.005)))
                for i, c in enumerate(conds)
                for h in range(hosts)
                for s in range(seeds)
            ]
            cells = StageCells(
                "stage3", tuple(range(seeds)), tuple(f"h{h}" for h in range(hosts)), tuple(conds)
            )
            pool = pool_cells([cells], runs, conds)
            ev = evaluate_pool(study, gate, pool, with_stability=False)
            t0, c0 = time.perf_counter(), time.process_time()
            conf = verdict_confidence(ev)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(
                f"{args.gate} {len(conds)} conditions x {hosts * seeds} cells ({layout}): "
                f"{wall:.3f} s wall, {cpu:.3f} s CPU, {conf.verdict_replicates} judged replicates"
            )


if __name__ == "__main__":
    main()
