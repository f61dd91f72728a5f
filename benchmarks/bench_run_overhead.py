"""Overhead of `stagewise run` over running the same runs by hand, back to back.

A stage of many short real CPU runs (tiny config) runs twice in this session:
  1. `stagewise run --workers W` (ledger, claims, logs, progress parsing, one process per run);
  2. the same argv (from `stagewise run --dry-run --json`), W loops in parallel, each starting
     its runs back to back with no bookkeeping at all: what a shell loop does.
Reported: the fraction of wall time a worker slot sits idle between runs (from the ledger's
claim/finish times per slot), the idle gap per run in seconds and as a share of a 5-minute
budget (target < 2%), the per-run start-up cost (process start -> first progress line; the CPU
runner does not compile), and the stage's wall time as a ratio of the hand loop's.

    .venv/bin/python benchmarks/bench_run_overhead.py                 # 8 runs, 3 s, 2 workers
    .venv/bin/python benchmarks/bench_run_overhead.py --runs 16 --budget 5 --workers 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

FIVE_MINUTES = 300.0


def make_study(root: Path, data: Path, runs: int, budget: float, workers: int) -> Path:
    study = root / "study"
    study.mkdir()
    rows = ["label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size"]
    rows += [
        f"c{i},c{i},{'reference' if i == 0 else 'variant'},2,32,0.04,4096" for i in range(runs)
    ]
    (study / "matrix.csv").write_text("\n".join(rows) + "\n")
    (study / "study.toml").write_text(
        f"""[study]
name = "bench"
reference = "c0"
matrix = "matrix.csv"
[runner]
device = "cpu"
sequence_len = 128
device_batch_size = 16
eval_tokens = 8192
data = "{data}"
[hosts.local]
executor = "local"
devices = ["cpu"]
workers = {workers}
[stages.s1]
budget = {budget}
seeds = [1]
hosts = ["local"]
candidates = "all"
"""
    )
    return study


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def slot_idle(study: Path, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Idle time of each slot between one child's exit and the next child's start.

    A run's slot is busy from its claim (ledger `started_at`) for the child's lifetime (the
    executor's elapsed seconds); whatever lies between that and the slot's next claim is the
    driver's overhead: noticing the exit, classifying, writing the ledger, claiming the next.
    """
    conn = sqlite3.connect(study / "ledger.sqlite")
    started = {
        f"s1/{c}/seed{s}/{h}": _ts(t)
        for c, s, h, t in conn.execute("SELECT condition_id, seed, host, started_at FROM runs")
    }
    conn.close()
    by_slot: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        start = started[row["run"]]
        by_slot.setdefault(row["worker"], []).append((start, start + row["seconds"]))
    gaps: list[float] = []
    span = 0.0
    for spans in by_slot.values():
        spans.sort()
        span += spans[-1][1] - spans[0][0]
        gaps += [b[0] - a[1] for a, b in itertools.pairwise(spans)]
    return {
        "idle_fraction": sum(gaps) / span if span else 0.0,
        "gap_mean_s": statistics.mean(gaps) if gaps else 0.0,
        "gap_max_s": max(gaps, default=0.0),
    }


def by_hand(argvs: list[list[str]], workers: int, cwd: Path) -> dict[str, Any]:
    """W loops, each running its share of the runs back to back; start-up measured per run."""
    startups: list[float] = []
    lock = threading.Lock()
    # A careful user splits the cores as the executor does; without this, W runners each
    # take every core and the hand loop is several times slower than `stagewise run`.
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    env = {**os.environ, "STAGEWISE_TORCH_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}

    def loop(share: list[list[str]]) -> None:
        for argv in share:
            t0 = time.monotonic()
            # Own session, as the executor does: with the kernel's autogroup scheduling
            # (sched_autogroup_enabled=1) CPU is shared per session, so on a busy machine runs
            # left in one session get one share between them (measured: 2x slower here).
            proc = subprocess.Popen(
                argv, cwd=cwd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
            )
            first = None
            assert proc.stdout is not None
            for line in proc.stdout:
                if first is None and line.startswith("progress:"):
                    first = time.monotonic() - t0
            proc.wait()
            if first is not None:
                with lock:
                    startups.append(first)

    t0 = time.monotonic()
    loops = [threading.Thread(target=loop, args=(argvs[i::workers],)) for i in range(workers)]
    for t in loops:
        t.start()
    for t in loops:
        t.join()
    return {"wall_s": time.monotonic() - t0, "startup_s": statistics.mean(startups)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--budget", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="rounds; the best of each is kept")
    args = ap.parse_args()
    sw = [sys.executable, "-m", "stagewise"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [
                *sw,
                "data",
                "prepare",
                "--source",
                "sample",
                "--out",
                str(root / "data"),
                "--vocab-size",
                "1024",
            ],
            check=True,
            capture_output=True,
        )
        study = make_study(root, root / "data", args.runs, args.budget, args.workers)
        dry = json.loads(
            subprocess.run(
                [*sw, "run", str(study), "s1", "--dry-run", "--json"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        argvs = [row["argv"] for row in dry["dry_run"]]
        for argv in argvs:  # the hand loop writes elsewhere, so the stage starts clean
            argv[argv.index("--out") + 1] += "-hand"

        # Alternate the two, fresh ledger each time, and keep the best of each: the machine
        # may be shared, and the minimum is the least disturbed measurement.
        hands, stages = [], []

        def stage_round() -> None:
            for path in [study / "runs", *study.glob("ledger.sqlite*")]:
                subprocess.run(["rm", "-rf", str(path)], check=True)
            t0 = time.monotonic()
            proc = subprocess.run(
                [*sw, "run", str(study), "s1", "--workers", str(args.workers), "--json"],
                capture_output=True,
                text=True,
            )
            wall = time.monotonic() - t0
            if proc.returncode != 0:
                sys.exit(f"stagewise run failed:\n{proc.stdout}\n{proc.stderr}")
            result = json.loads(proc.stdout)
            startups = [r["startup_seconds"] for r in result["succeeded"] if r["startup_seconds"]]
            stages.append((wall, result, startups, slot_idle(study, result["succeeded"])))

        for i in range(args.repeat):
            # Alternate which goes first, so a load that drifts over time favours neither.
            if i % 2 == 0:
                hands.append(by_hand(argvs, args.workers, study))
                stage_round()
            else:
                stage_round()
                hands.append(by_hand(argvs, args.workers, study))
            print(
                f"round {i + 1}: hand {hands[-1]['wall_s']:.1f}s, stagewise run "
                f"{stages[-1][0]:.1f}s",
                flush=True,
            )
        hand = min(hands, key=lambda h: h["wall_s"])
        hand["startup_s"] = min(h["startup_s"] for h in hands)
        stage_wall, result, startups, idle = min(stages, key=lambda s: s[0])
        startups = min((s[2] for s in stages), key=statistics.mean)

    stage_startup = statistics.mean(startups)
    print(f"{args.runs} runs x {args.budget:g}s budget on {args.workers} CPU workers")
    print(f"hand loop wall          {hand['wall_s']:8.2f} s")
    print(f"stagewise run wall      {stage_wall:8.2f} s   ratio {stage_wall / hand['wall_s']:.3f}")
    print(
        f"  of which in the loop  {result['wall_seconds']:8.2f} s   ratio "
        f"{result['wall_seconds'] / hand['wall_s']:.3f}"
    )
    print(
        f"slot idle between runs  {100 * idle['idle_fraction']:8.2f} %  "
        f"(mean gap {idle['gap_mean_s'] * 1000:.0f} ms, max {idle['gap_max_s'] * 1000:.0f} ms)"
    )
    print(
        f"  gap vs a 5-min budget {100 * idle['gap_mean_s'] / FIVE_MINUTES:8.3f} %  (target < 2%)"
    )
    print(
        f"start-up to first step  {stage_startup:8.2f} s run / {hand['startup_s']:.2f} s hand   "
        f"ratio {stage_startup / hand['startup_s']:.3f}"
    )


if __name__ == "__main__":
    main()
