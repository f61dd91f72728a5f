"""Resume after a lost driver: finished results are adopted, half-finished runs are put back."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from stagewise.executors.stage import recover_stale
from stagewise.ledger import Ledger, RunKey
from stagewise.paths import run_dir
from stagewise.study import load_study
from tests.conftest import write_study
from tests.executors.conftest import with_ledger

STUDY = """\
[study]
name = "r"
reference = "c_a"
matrix = "matrix.csv"
[hosts.h]
executor = "local"
[stages.s1]
budget = "4s"
seeds = [1]
hosts = ["h"]
candidates = "all"
"""
MATRIX = "label,condition_id,role,depth\na,c_a,reference,2\nb,c_b,variant,2\n"
DEAD = f"{socket.gethostname()}:999999999:1"  # a driver pid that cannot be alive


def test_lost_driver_results_are_adopted_and_others_put_back(tmp_path: Path) -> None:
    study = load_study(with_ledger(write_study(tmp_path / "s", study=STUDY, matrix=MATRIX)))
    finished, halfway = RunKey("s1", "c_a", 1, "h"), RunKey("s1", "c_b", 1, "h")
    out = run_dir(study.root, "s1", "c_a", 1, "h") / "out"
    out.mkdir(parents=True)
    (out / "summary.json").write_text(
        json.dumps({"status": "succeeded", "val_bpb": 1.234, "checkpoint_sha256": "ab" * 32})
    )
    half = run_dir(study.root, "s1", "c_b", 1, "h") / "out"
    half.mkdir(parents=True)
    (half / "summary.json").write_text(json.dumps({"status": "failed", "cause": "interrupted"}))
    with Ledger.open(study.root) as ledger:
        ledger.ensure_runs([finished, halfway])
        assert ledger.claim(finished, DEAD) and ledger.claim(halfway, DEAD)
        put_back, adopted = recover_stale(ledger, "me", study)
        assert adopted == [str(finished)] and put_back == [str(halfway)]
        done = ledger.run(finished)
        assert done is not None and done.status == "succeeded" and done.val_bpb == 1.234
        assert done.attempts == 1 and done.checkpoint_sha256 == "ab" * 32
        assert done.source is not None and done.source.startswith("recovered from")
        again = ledger.run(halfway)
        assert again is not None and again.status == "interrupted"
