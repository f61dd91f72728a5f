"""The Executor contract on the local executor: slots, pinning, events, cancel."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from stagewise.errors import ExecutorError
from stagewise.executors.base import (
    Executor,
    ExecutorEvent,
    RunOutcome,
    RunProgress,
    RunStarted,
    RunTask,
    executor_class,
)
from stagewise.executors.local import LocalExecutor, host_slots
from stagewise.ledger import RunKey
from stagewise.study import load_study
from tests.executors.conftest import FAKE, fake_study


def _task(tmp_path: Path, cond: str, mode: int, timeout: float = 30.0) -> RunTask:
    folder = tmp_path / cond
    argv = (
        sys.executable,
        str(FAKE),
        "--mode",
        str(mode),
        "--out",
        str(folder / "out"),
        "--key",
        cond,
        "--journal",
        str(tmp_path / "journal.txt"),
        "--sleep",
        "0.3",
    )
    return RunTask(
        RunKey("s1", cond, 1, "block-a"),
        argv,
        {"EXTRA": "1"},
        str(tmp_path),
        str(folder / "out"),
        str(folder / "train.log"),
        1.0,
        timeout,
    )


def _drain(ex: Executor, n: int, limit: float = 30.0) -> list[ExecutorEvent]:
    events: list[ExecutorEvent] = []
    end = time.monotonic() + limit
    while sum(isinstance(e, RunOutcome) for e in events) < n and time.monotonic() < end:
        events += ex.poll(0.1)
    return events


def test_registry_gives_the_local_executor() -> None:
    assert executor_class("local") is LocalExecutor
    with pytest.raises(ExecutorError, match="no executor named 'kubernetes'"):
        executor_class("kubernetes")  # slurm is registered now (issue 29)


def test_slots_pin_gpus_and_split_cpu_threads(tmp_path: Path) -> None:
    study = load_study(
        fake_study(tmp_path / "s", {"a": 0}, hosts=("block-a", "block-b"), workers=2)
    )
    gpu = replace(study.hosts["block-a"], devices=("cuda:0", "cuda:3"))
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in host_slots(gpu)] == ["0", "3"]
    ex = LocalExecutor(study, list(study.hosts.values()), cores=8)
    assert ex.capacity("block-a") == 2 and ex.threads_per_cpu_worker == 2  # 8 cores / 4
    capped = LocalExecutor(study, list(study.hosts.values()), workers=2, cores=8)
    assert capped.capacity("block-a") == 2 and capped.threads_per_cpu_worker == 4
    assert {s.env["STAGEWISE_TORCH_THREADS"] for s in capped.slots} == {"4"}
    with pytest.raises(ExecutorError, match="--workers 0"):
        LocalExecutor(study, list(study.hosts.values()), workers=0)


def test_events_and_capacity(tmp_path: Path) -> None:
    study = load_study(fake_study(tmp_path / "s", {"a": 0}))
    ex = LocalExecutor(study, [study.hosts["block-a"]])
    assert ex.free_slots("block-a") == 1
    ex.submit(_task(tmp_path, "ok", 0))
    assert ex.free_slots("block-a") == 0 and ex.active() == 1
    with pytest.raises(ExecutorError, match="no free local slot"):
        ex.submit(_task(tmp_path, "other", 0))
    events = _drain(ex, 1)
    assert isinstance(events[0], RunStarted) and events[0].slot == "block-a/cpu#0"
    assert [e.step for e in events if isinstance(e, RunProgress)] == [1, 2, 3]
    (outcome,) = [e for e in events if isinstance(e, RunOutcome)]
    assert outcome.status == "succeeded" and outcome.startup_seconds is not None
    assert ex.active() == 0 and ex.free_slots("block-a") == 1
    ex.close()


def test_cancel_all_reports_interrupted(tmp_path: Path) -> None:
    study = load_study(fake_study(tmp_path / "s", {"a": 0}))
    ex = LocalExecutor(study, [study.hosts["block-a"]])
    ex.submit(_task(tmp_path, "hang", 3))
    while not (tmp_path / "journal.txt").exists():
        time.sleep(0.05)
    ex.cancel_all("stop for test")
    (outcome,) = [e for e in _drain(ex, 1) if isinstance(e, RunOutcome)]
    assert outcome.status == "interrupted" and outcome.cause == "stop for test"
    ex.close()


def test_bad_task_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ExecutorError, match="argv"):
        RunTask(RunKey("s", "c", 1, "h"), (), {}, ".", ".", "x.log", 1.0, 2.0)
    with pytest.raises(ExecutorError, match="timeout=0"):
        RunTask(RunKey("s", "c", 1, "h"), ("x",), {}, ".", ".", "x.log", 1.0, 0)
