"""`stagewise run`: train every pending run of a stage on its hosts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from stagewise.cli.common import console, emit_json, err_console, open_study
from stagewise.cli.progress import LiveReporter, PlainReporter
from stagewise.errors import ExecutorError
from stagewise.executors.stage import NullReporter, Reporter, run_stage
from stagewise.gates.freeze import require_frozen

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def run(
    folder: Annotated[Path, typer.Argument(help="Study folder (holds study.toml and the ledger).")],
    stage: Annotated[
        str | None,
        typer.Argument(help="Stage id, e.g. stage1b; without it, walk the whole study."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="At most this many runs at once (default: every declared slot)."),
    ] = None,
    retries: Annotated[
        int, typer.Option(help="Retries of a run that failed for a transient cause (never NaN).")
    ] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would run, with its argv; change nothing.")
    ] = False,
    allow_unfrozen: Annotated[
        bool,
        typer.Option(
            "--allow-unfrozen", help="Run although a gate pooling the stage is not frozen (logged)."
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option(help="Why --allow-unfrozen is used; recorded in the ledger.")
    ] = None,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also rerun runs recorded as failed before.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait/--no-wait",
            help="If another `stagewise run` is active on the study: wait for it, or refuse.",
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary only.")] = False,
    freeze: Annotated[
        bool,
        typer.Option(
            "--freeze", help="Walk only: freeze each gate just before its first stage starts."
        ),
    ] = False,
    through: Annotated[
        str | None, typer.Option(help="Walk only: stop after this stage (and its gates).")
    ] = None,
) -> None:
    """Walk the whole study (no STAGE) or run one stage, on local (and Ray) hosts; resumable.

    Exit codes: 0 every run succeeded (or awaits import), 1 a run failed (now or before), 2 bad input or refused (e.g. gate not frozen),
    75 the cluster was lost mid-stage (rerun the same command once it is back), 130 interrupted
    (running runs are marked interrupted and rerun next time).

    Without STAGE, walk the whole study: every stage in order, each gate applied once its stages
    are complete; it stops (exit 0) with a "waiting for ..." line where an import or a manual
    decision is needed. See docs/running.md."""
    if stage is None:
        from stagewise.cli.walk_cmd import walk

        if allow_unfrozen:
            raise ExecutorError("--allow-unfrozen needs a STAGE; the walk uses --freeze instead")
        return walk(
            folder,
            freeze=freeze,
            through=through,
            dry_run=dry_run,
            workers=workers,
            retries=retries,
            retry_failed=retry_failed,
            wait=wait,
            as_json=as_json,
        )
    if freeze or through is not None:
        raise ExecutorError("--freeze and --through walk the whole study: leave out STAGE")
    reporter: Reporter
    if as_json or dry_run:
        reporter = NullReporter()
    elif console.is_terminal:
        reporter = LiveReporter(console)
    else:
        reporter = PlainReporter(console)
    with open_study(folder, start=True) as (study, ledger):
        ledger.require_unerased()
        state = run_stage(
            study,
            ledger,
            stage,
            workers=workers,
            retries=retries,
            dry_run=dry_run,
            allow_unfrozen=allow_unfrozen,
            reason=reason,
            retry_failed=retry_failed,
            reporter=reporter,
            wait=wait,
            notify=lambda message: err_console.print(message, markup=False, soft_wrap=True),
            frozen_check=require_frozen,
        )
    if as_json:
        emit_json(state.as_dict())
    elif dry_run:
        for row in state.dry_run:
            console.print(f"{row['action']:>15}  {row['run']}  [{row['status']}]", markup=False)
            if row["action"] == "run":
                console.print(
                    "                 " + " ".join(row["argv"]), markup=False, soft_wrap=True
                )
        problems = {r["frozen_problem"] for r in state.dry_run if r["frozen_problem"]}
        for problem in problems:
            console.print(f"would refuse: {problem}", markup=False)
    if state.stopped:
        sys.exit(EXIT_INTERRUPTED)
    if state.failed or state.previously_failed:
        sys.exit(EXIT_FAILED)  # the stage is not complete until its failed runs are rerun


def register(app: typer.Typer) -> None:
    app.command("run")(run)
