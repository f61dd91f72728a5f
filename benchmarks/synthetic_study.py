"""A synthetic two-gate study of about 1,000 imported runs, written deterministically.

Shared by `compare_outputs.py` (the outputs before and after a change must agree on it) and
`bench_report.py` (the time of `report` and `bundle` on a study of that size). 100 conditions
(the runner's own parameters, so the gates cost them in params_M); stage s1 runs all of them on
2 seeds x 3 host blocks (600 runs), gate g1 promotes the 49 best by mean plus the reference, and
stage s2 runs those 50 on 4 seeds x 2 blocks (400 runs) before the confirmation gate g2.

    python benchmarks/synthetic_study.py OUT      # write the folder (nothing imported yet)
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

CONDITIONS = 100
S1_SEEDS, S1_HOSTS = (1, 2), ("block-a", "block-b", "block-c")
S2_SEEDS, S2_HOSTS = (3, 4, 5, 6), ("block-a", "block-b")
K = 49  # promoted by best_k; the reference is kept besides: 50 candidates at s2

STUDY = """\
[study]
name = "synthetic-1000"
reference = "c000"
matrix = "matrix.csv"

[hosts.block-a]
executor = "external"
[hosts.block-b]
executor = "external"
[hosts.block-c]
executor = "external"

[stages.s1]
budget = "5m"
seeds = [1, 2]
hosts = ["block-a", "block-b", "block-c"]
candidates = "all"

[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [{{ rule = "best_k", k = {k} }}, {{ rule = "keep", roles = ["reference"], reason = "the baseline" }}]

[stages.s2]
budget = "15m"
seeds = [3, 4, 5, 6]
hosts = ["block-a", "block-b"]
candidates = {{ gate = "g1" }}

[gates.g2]
kind = "confirm"
stages = ["s2"]
rules = [{{ rule = "max_gap_to_reference", threshold = 0.01 }}]
"""

HEADER = "stage,condition_id,seed,host,val_bpb,training_seconds,total_tokens_M,status,cause\n"


def condition_id(i: int) -> str:
    return f"c{i:03d}"


def write_study(folder: Path) -> Path:
    """The study folder (study.toml, matrix.csv) and its results s1.csv and s2.csv beside."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(STUDY.format(k=K), encoding="utf-8")
    rows = ["label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size"]
    for i in range(CONDITIONS):
        role = "reference" if i == 0 else "comparator" if i == 1 else "variant"
        depth, aspect = 2 + i % 6, 32 + 16 * (i % 4)
        rows.append(f"r{i},{condition_id(i)},{role},{depth},{aspect},0.04,4096")
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    rng = random.Random(1000)
    quality = {condition_id(i): 1.5 + 0.0004 * i + rng.gauss(0, 0.002) for i in range(CONDITIONS)}
    lines = [HEADER]
    for cid, q in quality.items():
        for seed in S1_SEEDS:
            for host in S1_HOSTS:
                val = q + rng.gauss(0, 0.003)
                lines.append(f"s1,{cid},{seed},{host},{val:.6f},300.0,{1.5 + rng.random():.3f},,\n")
    (folder / "s1.csv").write_text("".join(lines), encoding="utf-8")
    # s2's rows depend on what g1 promotes: write_s2 writes them once it has been applied.
    return folder


def write_s2(folder: Path, candidates: list[str]) -> Path:
    """s2.csv for the promoted candidates (4 seeds x 2 blocks each)."""
    rng = random.Random(2000)
    lines = [HEADER]
    for cid in candidates:
        base = 1.45 + 0.0004 * int(cid[1:])
        for seed in S2_SEEDS:
            for host in S2_HOSTS:
                val = base + rng.gauss(0, 0.002)
                lines.append(f"s2,{cid},{seed},{host},{val:.6f},900.0,{4.5 + rng.random():.3f},,\n")
    path = folder / "s2.csv"
    path.write_text("".join(lines), encoding="utf-8")
    return path


if __name__ == "__main__":
    write_study(Path(sys.argv[1]))
