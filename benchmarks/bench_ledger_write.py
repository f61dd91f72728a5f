"""What keeping the record safe costs per ledger write (issue 30).

Every write now also rewrites `ledger.head` (the chain head beside the ledger) and refreshes
`ledger.sqlite.bak` through SQLite's backup API, after checking that the ledger extends the
backup. A ledger of N imported runs is built in a temporary folder; the same event is appended
with and without the backup step, in the same run, and the ratio printed.

    python benchmarks/bench_ledger_write.py                  # 1,000 and 10,000 runs
    python benchmarks/bench_ledger_write.py --runs 50000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from stagewise.ledger import Ledger, RunKey

WRITES = 20


def measure(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp)) as ledger:
        keys = [RunKey("s", f"c{i % 500}", i // 500, "h") for i in range(runs)]
        rows = [
            {
                "stage": "s",
                "condition_id": k.condition_id,
                "seed": k.seed,
                "host": "h",
                "status": "succeeded",
                "val_bpb": 1.0 + i * 1e-6,
                "_line": i,
            }
            for i, k in enumerate(keys)
        ]
        ledger.record_imports(rows, "bench.csv")
        size = sum(
            p.stat().st_size
            for p in Path(tmp).glob("ledger.sqlite*")
            if not p.name.endswith(".bak")
        )
        start = time.perf_counter()
        for _ in range(WRITES):
            ledger.log_event("bench", "x", {})
        full = (time.perf_counter() - start) / WRITES
        ledger._backup = lambda: None  # type: ignore[method-assign]  # the baseline: no backup
        start = time.perf_counter()
        for _ in range(WRITES):
            ledger.log_event("bench", "x", {})
        bare = (time.perf_counter() - start) / WRITES
    return {"runs": runs, "bytes": size, "write_ms": full * 1e3, "bare_ms": bare * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, nargs="*", default=[1000, 10000])
    args = parser.parse_args()
    print("runs  ledger-MB  write-ms (head+backup)  without-backup-ms  ratio")
    for n in args.runs:
        r = measure(n)
        print(
            f"{n:>6}  {r['bytes'] / 2**20:>8.1f}  {r['write_ms']:>22.1f}  "
            f"{r['bare_ms']:>17.1f}  {r['write_ms'] / r['bare_ms']:>5.1f}"
        )


if __name__ == "__main__":
    main()
