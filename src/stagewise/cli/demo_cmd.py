"""`stagewise demo`: the main job on the embedded corpus, on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stagewise.cli.common import console
from stagewise.cli.walk_cmd import eta_lines, view_for_terminal, walk_reporter
from stagewise.demo import run_demo, summary_lines


def demo(
    out: Annotated[Path, typer.Option(help="Study folder to create (or resume).")] = Path(
        "stagewise-demo"
    ),
    workers: Annotated[
        int | None,
        typer.Option(help="At most this many runs at once (default: one per host block)."),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="Shorter budgets (about 3 minutes on 2 cores; for tests)."),
    ] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also rerun runs recorded as failed before.")
    ] = False,
) -> None:
    """Run a complete staged promotion study on the embedded corpus, on CPU: freeze, run, gate,
    repeat (the walk of `stagewise run DIR --freeze`); then sensitivity, budget, report and bundle. Interrupt it and run it again to resume; after failed runs, fix the cause and run it again with --retry-failed."""

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    reporter = walk_reporter(view_for_terminal())
    result = run_demo(
        out, quick=quick, workers=workers, reporter=reporter, say=say, retry_failed=retry_failed
    )
    console.rule("summary")
    for line in summary_lines(result):
        say(line)
    for line in eta_lines(reporter.eta_checks()):
        say(line)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
