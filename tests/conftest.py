"""Shared fixtures: tiny studies written into tmp folders, and a runner for the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MATRIX = """\
label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size
a,c_a,reference,2,32,0.04,4096
b,c_b,comparator,2,48,0.04,4096
c,c_c,variant,1,64,0.05,4096
"""

# The runner settings of the acceptance check's tiny CPU study; `{data}` is the prepared data.
TINY_RUNNER = """\
[runner]
device = "cpu"
sequence_len = 128
device_batch_size = 16
eval_tokens = 8192
data = "{data}"
"""

STUDY = """\
[study]
name = "tiny"
reference = "c_a"
matrix = "matrix.csv"

[hosts.block-a]
executor = "external"
[hosts.block-b]
executor = "external"

[stages.s1]
budget = "4s"
seeds = [1, 2]
hosts = ["block-a", "block-b"]
candidates = "all"

[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [{ rule = "best_k", k = 1 }, { rule = "keep", roles = ["reference"], reason = "ref" }]

[stages.s2]
budget = "8s"
seeds = [3]
hosts = ["block-a", "block-b"]
candidates = { gate = "g1" }
"""


def write_study(folder: Path, study: str = STUDY, matrix: str = MATRIX) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(study, encoding="utf-8")
    (folder / "matrix.csv").write_text(matrix, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    return write_study(tmp_path / "study")


def run_cli(
    *args: str | Path, check: bool = False, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI as a user would (a fresh process, real argv)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "stagewise", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"stagewise {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(autouse=True, scope="session")
def _empty_doctor_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test reads or writes the user's ~/.cache/stagewise/doctor.json (freeze reads it)."""
    old = os.environ.get("STAGEWISE_CACHE")
    os.environ["STAGEWISE_CACHE"] = str(tmp_path_factory.mktemp("doctor-cache"))
    yield
    if old is None:
        os.environ.pop("STAGEWISE_CACHE", None)
    else:
        os.environ["STAGEWISE_CACHE"] = old


@pytest.fixture(scope="session")
def quick_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed `stagewise demo --quick` (minutes of CPU: run once per session, on request)."""
    out = tmp_path_factory.mktemp("quick-demo") / "demo"
    proc = run_cli("demo", "--out", out, "--quick", check=True)
    # What the demo printed, for the tests that read it (beside the study, not inside it).
    (out.parent / "demo-stdout.txt").write_text(proc.stdout)
    return out
