"""Classifying how a run ended, and parsing the runner's progress lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.executors.base import RunTask
from stagewise.executors.process import classify, parse_progress
from stagewise.ledger import RunKey

KEY = RunKey("s1", "c_a", 1, "block-a")
BLOCK = "progress: step=3 progress=1.0 loss=3.0\n---\nval_bpb:          2.500000\nnum_steps: 3\n"


def _task(tmp_path: Path) -> RunTask:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    return RunTask(KEY, ("x",), {}, str(tmp_path), str(out), str(tmp_path / "train.log"), 4.0, 10.0)


def _summary(task: RunTask, **fields: object) -> None:
    (Path(task.out_dir) / "summary.json").write_text(json.dumps(fields))


def test_summary_json_success_carries_checkpoint(tmp_path: Path) -> None:
    task = _task(tmp_path)
    _summary(task, status="succeeded", val_bpb=2.1, checkpoint_path="/c", checkpoint_sha256="ab")
    o = classify(task, 0, "")
    assert (o.status, o.val_bpb, o.checkpoint_path, o.checkpoint_sha256) == (
        "succeeded",
        2.1,
        "/c",
        "ab",
    )


def test_block_in_stdout_when_there_is_no_summary(tmp_path: Path) -> None:
    o = classify(_task(tmp_path), 0, BLOCK)
    assert o.status == "succeeded" and o.summary["val_bpb"] == 2.5 and o.summary["num_steps"] == 3


@pytest.mark.parametrize(
    ("rc", "tail", "summary", "failure", "transient"),
    [
        (3, "", {"status": "diverged", "cause": "loss is NaN at step 4"}, "diverged", False),
        (0, "---\nval_bpb: nan\n", None, "diverged", False),
        (4, "", {"status": "oom"}, "oom", True),
        (1, "CUDA out of memory. Tried to allocate", None, "oom", True),
        (1, "Traceback ...\nValueError: boom", None, "crash", True),
        (-9, "", None, "killed", True),
        (-15, "", None, "killed", True),
        (-11, "", None, "crash", True),  # a segfault is the run's own fault, not a signal sent
        (-6, "", None, "crash", True),
        (2, "error: bad --depth", None, "bad_input", False),
        (0, "no block here", None, "no_result", False),
    ],
)
def test_failures_are_classified(
    tmp_path: Path, rc: int, tail: str, summary: dict | None, failure: str, transient: bool
) -> None:
    task = _task(tmp_path)
    if summary:
        _summary(task, **summary)
    o = classify(task, rc, tail)
    assert o.status == "failed" and o.failure == failure and o.transient is transient
    assert o.cause and o.cause.startswith(failure)


def test_timeout_and_cancel(tmp_path: Path) -> None:
    task = _task(tmp_path)
    o = classify(task, -15, "", timed_out=True)
    assert o.failure == "timeout" and "10s" in (o.cause or "") and o.transient
    o = classify(task, -15, "", cancelled="interrupted by SIGINT")
    assert o.status == "interrupted" and o.cause == "interrupted by SIGINT"


def test_cause_names_the_crash_line(tmp_path: Path) -> None:
    o = classify(_task(tmp_path), 1, "a\nValueError: boom\n\n")
    assert o.cause == "crash: exit code 1: ValueError: boom"


def test_parse_progress() -> None:
    line = (
        "progress: step=12 progress=0.2500 loss=4.123456 tok_per_s=1234.5 mfu=nan remaining_s=3.0\n"
    )
    p = parse_progress(line, KEY)
    assert p is not None
    assert (p.step, p.progress, p.loss, p.tok_per_s, p.mfu, p.remaining_s) == (
        12,
        0.25,
        4.123456,
        1234.5,
        None,
        3.0,
    )
    assert parse_progress("step 12 loss 4", KEY) is None
    assert parse_progress("progress: loss=1", KEY) is None
