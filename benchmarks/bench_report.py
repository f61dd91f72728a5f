"""Time of `stagewise report` and `stagewise bundle` before and after a change, in one run.

Two studies: the paper06 replay (init --example paper06, freeze g12h, import the 12-hour cells,
gate) and the synthetic 1,000-run study of `synthetic_study.py` (two gates applied). For each
source tree given (`--src` the change, `--baseline` the tree before it, e.g. a `git archive` of
main), the two commands run as a user runs them (`python -m stagewise`, a fresh process: imports
included) on the same study folders, alternating between the trees; the best of `--repeat` runs
is kept. Prints seconds and the ratio baseline / change (above 1: the change is faster).

    python benchmarks/bench_report.py --src src --baseline /tmp/base/src [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_study import write_s2, write_study


def cli(src: Path, *args: str | Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(src), "NO_COLOR": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "stagewise", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"stagewise {' '.join(map(str, args))}: {proc.stderr or proc.stdout}")
    return seconds, proc.stdout


def make_studies(src: Path, work: Path) -> dict[str, Path]:
    p06 = work / "paper06"
    cli(src, "init", p06, "--example", "paper06")
    cli(src, "freeze", p06, "g12h")
    cli(src, "import", p06, p06 / "results" / "stage3_12h.csv")
    cli(src, "gate", p06, "g12h")
    syn = write_study(work / "synthetic")
    cli(src, "freeze", syn, "g1")
    cli(src, "import", syn, syn / "s1.csv")
    _, out = cli(src, "gate", syn, "g1", "--json")
    cli(src, "freeze", syn, "g2")
    cli(src, "import", syn, write_s2(syn, list(json.loads(out)["promoted"])))
    cli(src, "gate", syn, "g2")
    return {"paper06": p06, "synthetic-1000": syn}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "change": args.src.resolve()}
    with tempfile.TemporaryDirectory(prefix="sw-bench-report-") as tmp:
        work = Path(tmp)
        studies = make_studies(trees["baseline"], work)
        best: dict[tuple[str, str, str], float] = {}
        for _ in range(args.repeat):
            for name, folder in studies.items():
                for command in ("report", "bundle"):
                    for tree, src in trees.items():
                        out = work / f"out-{name}-{command}-{tree}"
                        shutil.rmtree(out, ignore_errors=True)
                        seconds, _ = cli(src, command, folder, "--out", out)
                        key = (name, command, tree)
                        best[key] = min(best.get(key, float("inf")), seconds)
    print("| study | command | baseline s | change s | baseline / change |")
    print("|---|---|---:|---:|---:|")
    for name in studies:
        for command in ("report", "bundle"):
            b, c = best[(name, command, "baseline")], best[(name, command, "change")]
            print(f"| {name} | {command} | {b:.2f} | {c:.2f} | {b / c:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
