"""The progress views: plain lines off a terminal, a live table on one."""

from __future__ import annotations

import io

from rich.console import Console

from stagewise.cli.progress import LiveReporter, PlainReporter
from stagewise.executors.base import RunOutcome, RunProgress
from stagewise.executors.stage import RunningInfo, StageState
from stagewise.ledger import RunKey

KEY = RunKey("s1", "c_a", 1, "block-a")


def _state() -> StageState:
    return StageState(stage="s1", total=3, pending=1, slots=2)


def test_plain_lines() -> None:
    buf = io.StringIO()
    reporter = PlainReporter(Console(file=buf, width=200))
    state = _state()
    reporter.begin(state)
    ok = RunOutcome(KEY, "succeeded", summary={"val_bpb": 2.5}, elapsed_seconds=4.2)
    state.done.append(ok)
    reporter.event(state, ok)
    bad = RunOutcome(KEY, "failed", cause="diverged: NaN", failure="diverged", elapsed_seconds=1)
    state.failed.append(bad)
    reporter.event(state, bad)
    reporter.end(state)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "stage s1: 3 runs, 1 to run; 2 slots"
    assert lines[1] == "[1/3] s1 c_a seed1 block-a succeeded val_bpb=2.500000 (4.2s)"
    assert lines[2] == "[2/3] s1 c_a seed1 block-a failed (diverged: NaN) (1.0s)"
    assert lines[3].startswith("stage s1: 1/3 succeeded, 1 failed, 1 not started")


def test_live_view_shows_running_runs() -> None:
    buf = io.StringIO()
    reporter = LiveReporter(Console(file=buf, force_terminal=True, width=150))
    state = _state()
    reporter.begin(state)
    state.running[KEY] = RunningInfo(KEY, 2, slot="block-a/cpu#0", budget_seconds=4)
    state.running[KEY].progress = RunProgress(KEY, 5, 0.5, 3.2, 1234.0, None, 2.0)
    assert reporter.live is not None
    reporter.live.refresh()
    reporter.end(state)
    out = buf.getvalue()
    for text in ("ETA", "c_a seed1 block-a (try 2)", "block-a/cpu#0", "50%", "3.2000", "1,234"):
        assert text in out
