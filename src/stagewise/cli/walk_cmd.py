"""`stagewise run DIR` without a stage: the whole study in one command (see stagewise.walk)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text

from stagewise.cli.common import console, emit_json, err_console, open_study
from stagewise.cli.progress import LiveReporter, PlainReporter
from stagewise.executors.stage import StageState
from stagewise.walk import WalkReporter, dry_run_lines, run_study


class _WalkLive(LiveReporter):
    """The stage's live table under one line for the whole walk (stage and overall ETA)."""

    walk: WalkReporter | None = None

    def _render(self) -> Group:
        inner = super()._render()
        if self.walk is None:
            return inner
        return Group(Text(self.walk.headline(), style="bold"), inner)


class _WalkPlain(PlainReporter):
    walk: WalkReporter | None = None

    def begin(self, state: StageState) -> None:
        super().begin(state)
        if self.walk is not None:
            self._print(self.walk.headline())


def view_for_terminal() -> _WalkLive | _WalkPlain:
    """A live view on a terminal, plain lines elsewhere (logs, CI, pipes)."""
    return _WalkLive(console) if console.is_terminal else _WalkPlain(console)


def eta_lines(checks: list[dict[str, Any]]) -> list[str]:
    """How each stage's overall ETA compared with the time the walk then took."""
    from stagewise.budget_units import format_eta

    return [
        f"ETA check: at the start of stage {c['stage']} the overall ETA was "
        f"{format_eta(c['predicted_seconds'], 'unknown')}; the rest of the walk took "
        f"{format_eta(c['actual_seconds'], 'unknown')}"
        for c in checks
    ]


def walk_reporter(inner: _WalkLive | _WalkPlain | None) -> WalkReporter:
    view = WalkReporter(inner)
    if inner is not None:
        inner.walk = view
    return view


def walk(
    folder: Path,
    *,
    freeze: bool,
    through: str | None,
    dry_run: bool,
    workers: int | None,
    retries: int,
    retry_failed: bool,
    wait: bool,
    as_json: bool,
) -> None:
    def say(line: str) -> None:
        if not as_json:
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    inner = None if as_json or dry_run else view_for_terminal()
    with open_study(folder, start=True) as (study, ledger):
        ledger.require_unerased()
        view = walk_reporter(inner)
        result = run_study(
            study,
            ledger,
            freeze=freeze,
            through=through,
            dry_run=dry_run,
            workers=workers,
            retries=retries,
            retry_failed=retry_failed,
            reporter=view,
            wait=wait,
            say=say,
            notify=lambda message: err_console.print(message, markup=False, soft_wrap=True),
        )
    if as_json:
        emit_json(result.as_dict())
    elif dry_run:
        for line in dry_run_lines(result):
            say(line)
    elif result.waiting_for:
        say(result.waiting_for)
    elif result.outcome == "complete":
        say(f"study {study.name}: every stage run and every gate decided")
    elif result.outcome == "through":
        say(f"stopped after stage {result.stopped_at} (--through)")
    if not as_json:
        for line in eta_lines(result.eta_checks):
            say(line)
    if result.exit_code:
        sys.exit(result.exit_code)


__all__ = ["view_for_terminal", "walk", "walk_reporter"]
