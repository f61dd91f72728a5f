"""Gate cost against the number of cells: `stagewise gate` must stay near-linear (issue 18).

A synthetic study (hosts x seeds cells of three conditions, all external results) is written to a
temporary folder, imported, frozen, and the gate is computed read-only through the same
function `stagewise gate` uses (`gates.decide.compute_gate`). Prints seconds per size and the
ratio of time per cell between the largest and the smallest size (1.0 = perfectly linear).

    python benchmarks/bench_gate_cells.py                   # 1,250 .. 20,000 cells
    python benchmarks/bench_gate_cells.py --cells 20000     # one size
    python benchmarks/bench_gate_cells.py --baseline /tmp/base/src   # the same, and the
        # original implementation from another checkout, measured in the same run (a
        # subprocess with that source first on sys.path), for a speed ratio

The issue's bar: 20,000 cells under 10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A gate's cells are host-seed cells; each holds one result per condition. Three conditions,
# as in the paper's 12-hour confirmation gate: 20,000 cells are 60,000 results.
CONDITIONS = 3
HOSTS = 10

STUDY = """\
[study]
name = "bench"
reference = "c00"
matrix = "matrix.csv"

{hosts}
[stages.s1]
budget = "10m"
seeds = {seeds}
hosts = {host_ids}
candidates = "all"

[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [
  {{ rule = "best_k", k = 3, reason = "best means" }},
  {{ rule = "within_gap_of_best", threshold = 0.01, reason = "close to the best" }},
  {{ rule = "max_gap_to_reference", roles = ["variant"], threshold = 0.02 }},
]
"""


def write_study(folder: Path, cells: int) -> Path:
    seeds = max(1, cells // HOSTS)
    host_ids = [f"h{i:02d}" for i in range(HOSTS)]
    folder.mkdir(parents=True)
    (folder / "study.toml").write_text(
        STUDY.format(
            hosts="".join(f'[hosts.{h}]\nexecutor = "external"\n' for h in host_ids),
            seeds=json.dumps(list(range(1, seeds + 1))),
            host_ids=json.dumps(host_ids),
        ),
        encoding="utf-8",
    )
    lines = ["label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size"]
    for c in range(CONDITIONS):
        role = "reference" if c == 0 else "variant"
        lines.append(f"c{c:02d},c{c:02d},{role},2,64,0.04,4096")
    (folder / "matrix.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rng = random.Random(0)
    rows = ["stage,condition_id,seed,host,val_bpb,training_seconds"]
    for c in range(CONDITIONS):
        for h in host_ids:
            for s in range(1, seeds + 1):
                rows.append(f"s1,c{c:02d},{s},{h},{1.0 + 0.001 * c + rng.random() * 0.01:.6f},600")
    (folder / "results.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def _has_confidence(fn: object) -> bool:
    import inspect

    return "confidence" in inspect.signature(fn).parameters  # type: ignore[arg-type]


def _gate(study: object, runs: object, record: object, *, bootstrap: bool) -> int:
    """Compute the gate as `stagewise gate` does (read-only); return its number of cells."""
    from stagewise.gates import decide

    typed = getattr(decide, "result_from_runs", None)
    if not bootstrap and typed is not None and _has_confidence(typed):
        return len(typed(study, "g1", runs, freeze=record, confidence=None).cells)
    return len(decide.compute_gate(study, "g1", runs, freeze=record)["cells"])  # type: ignore[arg-type]


def measure(cells: int, with_confidence: bool = False) -> dict[str, float | None]:
    """Build, import and freeze a study of `cells` cells; time the gate computation."""
    from stagewise.executors.external import import_results
    from stagewise.gates.freeze import freeze
    from stagewise.ledger import Ledger
    from stagewise.study import load_study

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_study(Path(tmp) / "s", cells)
        study = load_study(folder)
        # Opening a new folder creates its ledger (as `init` does); the baseline has no
        # integrity check, so it is timed only where it exists.
        with Ledger.open(folder) as ledger:
            import_results(study, ledger, [folder / "results.csv"])
            freeze(study, ledger, "g1")
            runs = ledger.runs()
            record = ledger.current_freeze("g1")
            # The verdict-confidence bootstrap (issue 13) is timed apart: it re-judges the gate
            # on a fixed number of replicates, a cost of its own on top of the gate's.
            t0 = time.perf_counter()
            n_cells = _gate(study, runs, record, bootstrap=False)
            seconds = time.perf_counter() - t0
            full = None
            if with_confidence:
                t0 = time.perf_counter()
                _gate(study, runs, record, bootstrap=True)
                full = time.perf_counter() - t0
            t0 = time.perf_counter()
            check = getattr(ledger, "require_intact", None)
            if check is not None:
                check()
            check_s = time.perf_counter() - t0
    return {
        "cells": float(n_cells),
        "gate_s": seconds,
        "gate_with_confidence_s": full,
        "integrity_s": check_s,
    }


def _child(cells: int) -> None:
    print(json.dumps(measure(cells)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, nargs="*", default=[1250, 5000, 20000])
    parser.add_argument("--baseline", help="src/ folder of another checkout to compare with")
    parser.add_argument(
        "--with-confidence",
        action="store_true",
        help="also time the gate with its default verdict-confidence bootstrap",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child)
        return
    results = [measure(n, args.with_confidence) for n in args.cells]
    for r in results:
        conf = r["gate_with_confidence_s"]
        print(
            f"{int(r['cells'] or 0):>6} cells: gate {r['gate_s']:.2f} s "
            f"({1e6 * (r['gate_s'] or 0) / (r['cells'] or 1):.0f} us/cell), integrity check "
            f"{r['integrity_s']:.2f} s"
            + (f", gate with verdict confidence {conf:.2f} s" if conf is not None else "")
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        growth = (last["gate_s"] / last["cells"]) / (first["gate_s"] / first["cells"])
        print(f"time per cell, {int(last['cells'])} vs {int(first['cells'])} cells: x{growth:.2f}")
    if args.baseline:
        n = min(args.cells)
        env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(f"baseline failed: {proc.stderr.strip().splitlines()[-1:]}")
            return
        base = json.loads(proc.stdout.strip().splitlines()[-1])
        ours = next(r for r in results if r["cells"] == base["cells"])
        print(
            f"baseline at {int(base['cells'])} cells: gate {base['gate_s']:.2f} s; "
            f"this tree {ours['gate_s']:.2f} s (x{base['gate_s'] / ours['gate_s']:.1f} faster)"
        )


if __name__ == "__main__":
    main()
