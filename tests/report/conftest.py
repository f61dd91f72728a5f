"""Studies for the report tests: the paper06 replay and a small half-done synthetic study."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
from pathlib import Path

import pytest

from stagewise.create import init_study
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import freeze
from stagewise.ledger import Ledger, RunKey
from stagewise.study import load_study
from tests.conftest import write_study

CELLS = """\
stage,condition_id,seed,host,val_bpb,training_seconds,total_tokens_M,status,cause
s1,c_a,1,block-a,1.500000,4.0,1.5,,
s1,c_b,1,block-a,1.480000,4.0,1.6,,
s1,c_c,1,block-a,1.520000,4.0,1.4,,
s1,c_a,2,block-a,1.510000,4.0,1.5,,
s1,c_b,2,block-a,1.470000,4.0,1.6,,
s1,c_c,2,block-a,1.530000,4.0,1.4,,
s1,c_a,1,block-b,1.490000,4.1,1.5,,
s1,c_b,1,block-b,1.500000,4.1,1.6,,
s1,c_c,1,block-b,1.540000,4.1,1.4,,
s1,c_a,2,block-b,1.505000,4.1,1.5,,
s1,c_b,2,block-b,1.485000,4.1,1.6,,
s1,c_c,2,block-b,,4.1,,failed,diverged: loss NaN at step 12
"""


@pytest.fixture(scope="session")
def paper06(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """paper06 with g12h frozen, the 12-hour cells imported and the gate applied."""
    root = tmp_path_factory.mktemp("p06") / "p"
    init_study(root, "paper06")
    study = load_study(root)
    with Ledger.open(root) as ledger:
        freeze(study, ledger, "g12h")
        from stagewise.executors.external import import_results

        import_results(study, ledger, [root / "results" / "stage3_12h.csv"], {})
        apply_gate(study, ledger, "g12h")
    return root


def planted() -> dict[str, str]:
    home = os.path.expanduser("~")
    return {
        "path": f"{home}/secret-logs/run-17/train.log",
        "user": getpass.getuser(),
        "host": socket.gethostname(),
    }


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    """A tiny study half done: s1 imported (one run failed), g1 not frozen, s2 pending; one run
    carries an absolute path, the user name and the machine's name in its log and summary."""
    root = write_study(tmp_path / "study")
    cells = tmp_path / "cells.csv"
    cells.write_text(CELLS, encoding="utf-8")
    study = load_study(root)
    from stagewise.executors.external import import_results

    plant = planted()
    with Ledger.open(root) as ledger:
        ledger.log_event("study.init", study.name, {"example": None})
        import_results(study, ledger, [cells], {})
        # A locally driven run of the same stage, finished through the ledger API.
        key = RunKey("s2", "c_a", 3, "block-a")
        owner = f"{plant['user']}@{plant['host']}:4242"
        ledger.ensure_runs([key])
        assert ledger.claim(key, owner) is not None
        ledger.finish(
            key,
            "failed",
            owner=owner,
            cause=f"crashed on {plant['host']}: see {plant['path']}",
            summary={"note": f"{plant['path']} by {plant['user']}@{plant['host']}"},
            log_path=plant["path"],
            checkpoint_path=f"{os.path.dirname(plant['path'])}/ckpt.pt",
            log_tail=f"{plant['user']} {plant['host']} {plant['path']}",
        )
        assert ledger.run(key).status == "failed"  # type: ignore[union-attr]
    shutil.copy(cells, root / "cells.csv")
    return root
