"""The driver's fault policy and fault reports, without a cluster: which ends are rerun under
`max_retries`, what a block without a slot shows (and when it ends the stage), and what
`stagewise status` reads back from the ledger. The real faults are test_faults.py's."""

from __future__ import annotations

import io
import socket
import time
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from stagewise.cli.progress import LiveReporter, PlainReporter
from stagewise.errors import ClusterLost
from stagewise.executors import dispatch
from stagewise.executors.base import Executor, ExecutorNotice, RunOutcome, RunTask
from stagewise.executors.ownership import driver_owner
from stagewise.executors.state import RunningInfo, StageState
from stagewise.ledger import Ledger, RunKey
from stagewise.status import study_status
from stagewise.study import load_study
from tests.executors.conftest import fake_study

KEY = RunKey("s1", "ok", 1, "block-a")


def _study(tmp_path: Path, extra: str = "") -> Any:
    folder = fake_study(tmp_path / "s", {"ok": 0})
    if extra:
        text = (folder / "study.toml").read_text()
        text = text.replace("workers = 1\n", f"workers = 1\n{extra}", 1)
        (folder / "study.toml").write_text(text)
    return load_study(folder)


def _note(study: Any, outcome: RunOutcome, tries: dict, faults: dict, retries: int) -> str | None:
    return dispatch._retry_note(study, outcome, tries, faults, retries, {}, None)


def test_a_run_killed_from_outside_is_rerun_up_to_max_retries(tmp_path: Path) -> None:
    study = _study(tmp_path, "max_retries = 2\n")
    killed = RunOutcome(
        KEY, "failed", failure="killed", cause="killed: ended by SIGKILL, a signal from outside"
    )
    tries: dict[RunKey, int] = {}
    faults: dict[RunKey, int] = {}
    assert "fault retry 1 of 2" in (_note(study, killed, tries, faults, 0) or "")
    assert "fault retry 2 of 2" in (_note(study, killed, tries, faults, 0) or "")
    assert _note(study, killed, tries, faults, 0) is None  # spent, and no --retries
    # --retries then applies as to any transient failure.
    assert "attempt 2 of 2" in (_note(study, killed, tries, faults, 1) or "")
    assert _note(study, killed, tries, faults, 1) is None


def test_reruns_the_executor_made_count_against_the_policy(tmp_path: Path) -> None:
    study = _study(tmp_path)  # max_retries: 3 by default
    lost = RunOutcome(KEY, "failed", failure="lost", cause="lost: node died", fault_reruns=3)
    assert _note(study, lost, {}, {}, 0) is None  # Ray already reran it three times
    once = RunOutcome(KEY, "failed", failure="lost", cause="lost: node died", fault_reruns=1)
    assert "fault retry 2 of 3" in (_note(study, once, {}, {}, 0) or "")
    crash = RunOutcome(KEY, "failed", failure="crash", cause="crash: ended by SIGSEGV")
    assert _note(study, crash, {}, {}, 0) is None  # the run's own fault: only --retries


class _Slots(Executor):
    """An executor whose only host has `self.slots` slots (0: its only node is gone)."""

    kind = "local"
    slots = 1

    def capacity(self, host: str) -> int:
        return self.slots

    def active(self, host: str | None = None) -> int:
        return 0

    def submit(self, task: RunTask) -> None:
        raise AssertionError("not used")

    def poll(self, timeout: float = 0.2) -> list[Any]:
        return []

    def cancel_all(self, reason: str = "interrupted") -> None:
        pass

    def shortage(self, host: str) -> str:
        return f"hosts.{host}: no live node offers blk-a=1"


def _watch(study: Any) -> tuple[dispatch._SlotWatch, _Slots, StageState]:
    ex = _Slots(study, list(study.hosts.values()))
    state = StageState(stage="s1")
    state.running[KEY] = RunningInfo(KEY, 1)
    watch = dispatch._SlotWatch(study, {"local": ex})
    return watch, ex, state


def test_a_block_without_a_slot_is_said_and_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dispatch, "SLOT_CHECK_SECONDS", 0.0)
    watch, ex, state = _watch(_study(tmp_path))
    assert watch.check(deque(), state) == []
    ex.slots = 0
    (notice,) = watch.check(deque(), state)
    assert isinstance(notice, ExecutorNotice) and notice.host == "block-a"
    assert notice.text == (
        "hosts.block-a: no live node offers blk-a=1; waiting for one "
        "(set node_wait_seconds to end instead)"
    )
    ex.slots = 1  # a node joined
    assert watch.check(deque(), state) == [ExecutorNotice("host:block-a", None, "block-a")]


def test_node_wait_seconds_ends_the_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "SLOT_CHECK_SECONDS", 0.0)
    watch, ex, state = _watch(_study(tmp_path, "node_wait_seconds = 0.05\n"))
    ex.slots = 0
    (notice,) = watch.check(deque([KEY]), state)
    assert notice.text and "the stage ends after 0.05s (node_wait_seconds)" in notice.text
    time.sleep(0.1)
    with pytest.raises(ClusterLost) as caught:
        watch.check(deque([KEY]), state)
    assert "hosts.block-a.node_wait_seconds" in str(caught.value)
    assert caught.value.in_flight == (str(KEY),) and caught.value.exit_code == 75


def test_bad_fault_settings_are_refused_at_load(tmp_path: Path) -> None:
    from stagewise.errors import StudyError

    with pytest.raises(StudyError, match="node_wait_seconds"):
        _study(tmp_path, "node_wait_seconds = -1\n")


def test_status_shows_a_retry_and_what_the_driver_waits_for(tmp_path: Path) -> None:
    study = _study(tmp_path)
    me = driver_owner()
    dead = f"{socket.gethostname()}:{2**22 + 1}:1"  # past pid_max: no such process
    with Ledger.open(study.root) as ledger:
        ledger.ensure_runs([KEY])
        ledger.claim(KEY, me)
        ledger.finish(KEY, "failed", cause="killed: ended by SIGKILL", owner=me)
        ledger.log_event("run.retrying", str(KEY), {"attempt": 2, "after": "killed: SIGKILL"})
        ledger.claim(KEY, me, retry_failed=True)
        for owner, text in ((me, "hosts.block-a: no live node"), (dead, "from a dead one")):
            ledger.log_event(
                "executor.notice",
                "s1",
                {"topic": f"t-{owner}", "text": text, "host": "block-a", "owner": owner},
            )
        stage = study_status(study, ledger)["stages"][0]
        assert stage["retrying"] == [
            {"run": str(KEY), "attempt": 2, "after": "killed: SIGKILL", "note": None}
        ]
        assert stage["waiting"] == ["hosts.block-a: no live node"]  # a dead driver's is stale
        ledger.log_event("executor.notice", "s1", {"topic": f"t-{me}", "text": None})
        assert study_status(study, ledger)["stages"][0]["waiting"] == []


def test_the_views_show_notices() -> None:
    buf = io.StringIO()
    plain = PlainReporter(Console(file=buf, width=200))
    state = StageState(stage="s1")
    plain.event(state, ExecutorNotice("host:b", "hosts.b: no live node", "b"))
    plain.event(state, ExecutorNotice("host:b", None, "b"))
    assert buf.getvalue().splitlines() == [
        "waiting: hosts.b: no live node",
        "resolved: b is available again",
    ]
    buf = io.StringIO()
    live = LiveReporter(Console(file=buf, force_terminal=True, width=150))
    live.begin(state)
    state.notices["host:b"] = "hosts.b: no live node"
    state.notice_since["host:b"] = time.monotonic()
    assert live.live is not None
    live.live.refresh()
    live.end(state)
    assert "hosts.b: no live node" in buf.getvalue()
