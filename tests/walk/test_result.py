"""stagewise.result: the own-trainer helper writes what the executor reads, without torch."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from stagewise.errors import RunnerError
from stagewise.executors.base import RunTask
from stagewise.executors.process import classify
from stagewise.ledger import RunKey
from stagewise.protocol import finished_summary, parse_block
from stagewise.result import ENV_NAMES, run_facts, write_result


def _task(out: Path) -> RunTask:
    return RunTask(
        key=RunKey("s1", "c_a", 1, "h"),
        argv=("x",),
        env={},
        workdir=str(out.parent),
        out_dir=str(out),
        log_path=str(out.parent / "train.log"),
        budget_seconds=1.0,
        timeout_seconds=10.0,
        attempt=1,
        owner="me",
    )


def test_write_result_is_what_the_executor_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    path = write_result(
        val_bpb=1.2345678, out=out, training_seconds=3.2, num_steps=40, notes="mine"
    )
    assert path == out / "summary.json"
    summary = finished_summary(out)
    assert summary is not None and summary["val_bpb"] == 1.2345678  # unrounded
    assert summary["num_steps"] == 40 and summary["notes"] == "mine"
    block = parse_block(capsys.readouterr().out)
    assert block["val_bpb"] == 1.234568 and block["num_steps"] == 40
    outcome = classify(_task(out), 0, "")
    assert outcome.status == "succeeded" and outcome.val_bpb == 1.2345678


def test_a_nan_result_is_a_diverged_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_result(val_bpb=math.nan, out=out, echo=False, num_steps=3)
    data = json.loads((out / "summary.json").read_text())
    assert data["status"] == "diverged" and data["val_bpb"] is None
    assert finished_summary(out) is None
    assert classify(_task(out), 0, "").status == "failed"


def test_write_result_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAGEWISE_OUT", raising=False)
    with pytest.raises(
        RunnerError, match=re.escape("no out folder; pass out=... or set STAGEWISE_OUT")
    ):
        write_result(val_bpb=1.0)
    with pytest.raises(RunnerError, match=re.escape("val_bpb must be a number, but got '1.0'")):
        write_result(val_bpb="1.0", out=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(RunnerError, match="'status' is set by write_result"):
        write_result(val_bpb=1.0, out=tmp_path, status="succeeded")
    monkeypatch.setenv("STAGEWISE_OUT", str(tmp_path / "env-out"))
    assert write_result(val_bpb=1.0, echo=False) == tmp_path / "env-out" / "summary.json"


def test_run_facts_from_the_environment() -> None:
    facts = run_facts(
        {
            "STAGEWISE_OUT": "/x/out",
            "STAGEWISE_SEED": "7",
            "STAGEWISE_TOKEN_BUDGET": "32000",
            "STAGEWISE_CONDITION_ID": "c_a",
            "STAGEWISE_STAGE": "s1",
            "STAGEWISE_HOST": "block-a",
        }
    )
    assert facts.out == Path("/x/out") and facts.seed == 7 and facts.token_budget == 32000
    assert facts.budget_seconds is None and facts.step_budget is None
    assert (facts.condition_id, facts.stage, facts.host) == ("c_a", "s1", "block-a")
    assert run_facts({}).seed is None
    with pytest.raises(RunnerError, match="STAGEWISE_SEED='x': expected a number"):
        run_facts({"STAGEWISE_SEED": "x"})
    with pytest.raises(
        RunnerError, match=re.escape("STAGEWISE_STEP_BUDGET='2.5': expected an integer")
    ):
        run_facts({"STAGEWISE_STEP_BUDGET": "2.5"})
    assert len(set(ENV_NAMES)) == 8


def test_importable_without_torch() -> None:
    code = (
        "import sys; import stagewise.result; "
        "sys.exit(1 if any(m == 'torch' or m.startswith('torch.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
