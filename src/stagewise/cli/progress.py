"""How a running stage shows itself: a live Rich table on a terminal, plain lines elsewhere.

Plain lines (logs, CI, `| tee`) are one per finished run, e.g.
`[3/12] s1 c_a seed1 block-a succeeded val_bpb=2.912345 (4.2s)`.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stagewise.budget_units import format_eta as _dur
from stagewise.executors.base import ExecutorEvent, ExecutorNotice, RunJobState, RunOutcome
from stagewise.executors.state import StageState
from stagewise.words import plural


def outcome_line(state: StageState, outcome: RunOutcome) -> str:
    k = outcome.key
    n = state.finished_count + len(state.interrupted) + len(state.already_done)
    head = f"[{n}/{state.total}] {k.stage} {k.condition_id} seed{k.seed} {k.host} {outcome.status}"
    if outcome.status == "succeeded":
        bpb = outcome.val_bpb
        head += f" val_bpb={bpb:.6f}" if bpb is not None else ""
    elif outcome.cause:
        head += f" ({outcome.cause})"
    return head + f" ({outcome.elapsed_seconds:.1f}s)"


def _begin_line(state: StageState) -> str:
    parts = [f"stage {state.stage}: {plural(state.total, 'run')}", f"{state.pending} to run"]
    if state.already_done:
        parts.append(f"{len(state.already_done)} already succeeded")
    if state.previously_failed:
        parts.append(f"{len(state.previously_failed)} failed before (--retry-failed reruns)")
    if state.awaiting_import:
        parts.append(f"{len(state.awaiting_import)} awaiting import")
    if state.recovered:
        parts.append(f"{len(state.recovered)} interrupted runs put back")
    if state.adopted:
        parts.append(f"{len(state.adopted)} finished by the lost driver, results kept")
    if state.reattached:
        parts.append(f"{len(state.reattached)} re-attached to their cluster jobs")
    return ", ".join(parts) + f"; {plural(state.slots, 'slot')}"


def summary_line(state: StageState) -> str:
    parts = [
        f"stage {state.stage}: {len(state.done) + len(state.already_done)}/{state.total} succeeded",
        f"{len(state.failed)} failed",
    ]
    if state.interrupted:
        parts.append(f"{len(state.interrupted)} interrupted")
    if state.previously_failed:
        parts.append(f"{len(state.previously_failed)} failed earlier")
    if state.awaiting_import:
        parts.append(f"{len(state.awaiting_import)} awaiting import")
    left = state.pending
    if left:
        parts.append(f"{left} not started")
    return ", ".join(parts) + f" ({time.monotonic() - state.started:.1f}s)"


def notice_line(notice: ExecutorNotice) -> str:
    """A backend condition as it starts (`waiting: ...`) or ends (`resolved: ...`)."""
    if notice.text is not None:
        return f"waiting: {notice.text}"
    return f"resolved: {notice.host or 'the cluster head'} is available again"


class PlainReporter:
    """One line per finished run; for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def begin(self, state: StageState) -> None:
        self._print(_begin_line(state))

    def event(self, state: StageState, event: ExecutorEvent) -> None:
        if isinstance(event, RunOutcome):
            self._print(outcome_line(state, event))
        elif isinstance(event, ExecutorNotice):
            self._print(notice_line(event))
        elif isinstance(event, RunJobState) and event.note:
            k = event.key
            self._print(f"  {k.stage} {k.condition_id} seed{k.seed} {k.host}: {event.note}")

    def retry(self, state: StageState, outcome: RunOutcome, note: str) -> None:
        k = outcome.key
        self._print(f"  {k.stage} {k.condition_id} seed{k.seed} {k.host}: {note}")

    def end(self, state: StageState) -> None:
        if state.stopped:
            self._print(f"stopped by {state.stopped}: running runs were marked interrupted")
        self._print(summary_line(state))


class LiveReporter(PlainReporter):
    """A live table of running runs above the finished-run lines; refreshed 4 times a second."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self.live: Live | None = None
        self.state: StageState | None = None

    def begin(self, state: StageState) -> None:
        self.state = state
        super().begin(state)
        self.live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=4,
            transient=True,
        )
        self.live.start()

    def _render(self) -> Group:
        state = self.state
        if state is None:
            return Group()
        head = Text(
            f"{state.stage}: {len(state.done) + len(state.already_done)}/{state.total} done, "
            f"{len(state.running)} running, {len(state.failed)} failed, {state.pending} pending"
            f" - ETA {_dur(state.eta_seconds())}",
            style="bold",
        )
        now = time.monotonic()
        waits = [
            Text(
                f"waiting {_dur(now - state.notice_since.get(topic, now))}: {text}", style="yellow"
            )
            for topic, text in state.notices.items()
        ]
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("run", "slot", "step", "progress", "loss", "tok/s", "remaining"):
            table.add_column(col, justify="left" if col in ("run", "slot") else "right")
        for info in list(state.running.values()):
            p = info.progress
            k = info.key
            table.add_row(
                f"{k.condition_id} seed{k.seed} {k.host}"
                + (f" (try {info.attempt})" if info.attempt > 1 else ""),
                info.slot or "starting",
                str(p.step) if p else "-",
                f"{100 * p.progress:.0f}%" if p else f"start {_dur(now - info.started)}",
                f"{p.loss:.4f}" if p and p.loss is not None else "-",
                f"{p.tok_per_s:,.0f}" if p and p.tok_per_s is not None else "-",
                _dur(p.remaining_s) if p else "-",
            )
        return Group(head, *waits, table)

    def end(self, state: StageState) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        super().end(state)


__all__ = ["LiveReporter", "PlainReporter", "notice_line", "outcome_line", "summary_line"]
