"""Scheduling overhead per run on Slurm against the local executor, measured in the same session.

The same stage of short real CPU runs (the tiny study: 3 recipes x N seeds, one host block)
runs back to back, one run at a time, as:
  1. `executor = "local"`, one worker slot (warm worker: the baseline);
  2. `executor = "slurm"`, `array_parallelism = 1`, `runs_per_job = 1` (a job per run);
  3. `executor = "slurm"`, `array_parallelism = 1`, `runs_per_job = <all>` (one packed job).
For each: wall time from `stagewise run` to its end (submission to the last result collected),
the runs' recorded training seconds, and the overhead per run = (wall - sum of training
seconds) / runs: start-up, data, model, evaluation and checkpoint, plus for Slurm the queue,
the job's own start (srun, Python, submitit) and collecting the result. The ratio to the local
executor's overhead is the number that matters (goal: under 1.5x with packing).

Needs a Slurm cluster: SLURM_CONF set and `--partition` (e.g. after slurm-up.sh), or, run as
root from the repository root without SLURM_CONF, a private one-node cluster is started from
tests/executors/slurmtools.py for the benchmark and stopped after it.

    python benchmarks/bench_slurm_overhead.py                  # 6 runs x 3 s, 2 rounds
    python benchmarks/bench_slurm_overhead.py --seeds 4 --budget 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SW = [sys.executable, "-m", "stagewise"]
MATRIX = """label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size
a,c_a,reference,2,32,0.04,4096
b,c_b,comparator,2,48,0.04,4096
c,c_c,variant,1,64,0.05,4096
"""
RUNNER = """[runner]
device = "cpu"
sequence_len = 128
device_batch_size = 16
eval_tokens = 8192
data = "{data}"
"""


def make_study(root: Path, name: str, data: Path, host: str, seeds: int, budget: float) -> Path:
    study = root / name
    study.mkdir()
    (study / "matrix.csv").write_text(MATRIX)
    (study / "study.toml").write_text(
        '[study]\nname = "bench"\nreference = "c_a"\nmatrix = "matrix.csv"\n'
        + RUNNER.format(data=data)
        + host
        + f"[stages.s1]\nbudget = {budget}\nseeds = {list(range(1, seeds + 1))}\n"
        'hosts = ["block"]\ncandidates = "all"\n'
    )
    from stagewise.ledger import Ledger

    Ledger.open(study).close()  # what `stagewise init` gives a hand-written study
    return study


def measure(study: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [*SW, "run", str(study), "s1", "--allow-unfrozen", "--json"],
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.exit(f"stagewise run failed on {study.name}:\n{proc.stdout}\n{proc.stderr}")
    conn = sqlite3.connect(study / "ledger.sqlite")
    training = [t or 0.0 for (t,) in conn.execute("SELECT training_seconds FROM runs")]
    jobs = conn.execute("SELECT COUNT(DISTINCT job_id) FROM jobs").fetchone()[0]
    conn.close()
    runs = len(training)
    return {
        "wall_s": round(wall, 2),
        "training_s": round(sum(training), 2),
        "runs": runs,
        "jobs": jobs,
        "overhead_per_run_s": round((wall - sum(training)) / runs, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--partition", default=None, help="with SLURM_CONF: the partition")
    parser.add_argument(
        "--cpus", type=int, default=os.cpu_count() or 1, help="cores per run, both executors"
    )
    parser.add_argument("--repeat", type=int, default=2, help="rounds, modes interleaved")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    cluster = None
    partition = args.partition
    try:
        if not os.environ.get("SLURM_CONF"):
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.executors.slurmtools import Cluster, skip_reason

            reason = skip_reason()
            if reason:
                sys.exit(f"no Slurm cluster to measure on: {reason}")
            cluster = Cluster(root / "cluster").start()
            os.environ["SLURM_CONF"] = str(cluster.conf)
            partition = partition or "blk-a"
        if partition is None:
            sys.exit("--partition is required with SLURM_CONF")
        data = root / "data"
        subprocess.run(
            [
                *SW,
                "data",
                "prepare",
                "--source",
                "sample",
                "--out",
                str(data),
                "--vocab-size",
                "1024",
            ],
            check=True,
            capture_output=True,
        )
        n = 3 * args.seeds
        # The same cores per run on both sides: the local slot gets every core (one worker),
        # so the job asks for them too (torch threads follow cpus_per_task in the job).
        slurm = (
            f'[hosts.block]\nexecutor = "slurm"\npartition = "{partition}"\n'
            f"cpus_per_task = {args.cpus}\n"
        )
        modes = {
            "local": '[hosts.block]\nexecutor = "local"\ndevices = ["cpu"]\nworkers = 1\n',
            "slurm, a job per run": slurm + "array_parallelism = 1\nruns_per_job = 1\n",
            f"slurm, {n} runs per job": slurm + f"array_parallelism = 1\nruns_per_job = {n}\n",
        }
        # Rounds interleave the modes, so a change in the machine's load (other jobs on a
        # shared box) falls on every mode alike; each mode reports its median round.
        rounds: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
        for r in range(args.repeat):
            for i, (mode, host) in enumerate(modes.items()):
                study = make_study(root, f"study{r}-{i}", data, host, args.seeds, args.budget)
                rounds[mode].append(measure(study))
        results = {
            mode: dict(sorted(rows, key=lambda row: row["overhead_per_run_s"])[len(rows) // 2])
            for mode, rows in rounds.items()
        }
        for mode, rows in rounds.items():
            results[mode]["rounds_overhead_s"] = [row["overhead_per_run_s"] for row in rows]
        base = results["local"]["overhead_per_run_s"]
        for row in results.values():
            row["overhead_vs_local"] = round(row["overhead_per_run_s"] / base, 2)
        if args.json:
            print(json.dumps(results, indent=2))
            return
        print(
            f"{n} runs of {args.budget:g} s, one at a time, median of {args.repeat} interleaved "
            f"rounds (CPU: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})"
        )
        print(
            f"{'mode':<24}{'wall s':>8}{'train s':>9}{'jobs':>6}{'overhead/run s':>16}"
            f"{'vs local':>10}  rounds"
        )
        for mode, r in results.items():
            rounds_text = " ".join(f"{x:.1f}" for x in r["rounds_overhead_s"])
            print(
                f"{mode:<24}{r['wall_s']:>8.1f}{r['training_s']:>9.1f}{r['jobs']:>6}"
                f"{r['overhead_per_run_s']:>16.2f}{r['overhead_vs_local']:>9.2f}x  {rounds_text}"
            )
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
