"""Entry point: builds the Typer app from the command modules and turns errors into one line."""

from __future__ import annotations

import errno
import os
import sys
from typing import Annotated

import typer

from stagewise.cli import (
    backtest_cmds,
    demo_cmd,
    doctor_cmd,
    export_cmds,
    gate_cmds,
    report_cmds,
    run_cmds,
    runner_cmds,
    study_cmds,
    worker_cmd,
)
from stagewise.cli.common import err_console
from stagewise.errors import ClusterLost, StagewiseError

app = typer.Typer(
    name="stagewise",
    help="Staged promotion for micro-pretraining: frozen gates, auditable decisions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from stagewise import __version__

        typer.echo(f"stagewise {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Staged promotion for micro-pretraining: frozen gates, auditable decisions."""


study_cmds.register(app)
runner_cmds.register(app)
run_cmds.register(app)
gate_cmds.register(app)
report_cmds.register(app)
demo_cmd.register(app)
export_cmds.register(app)
backtest_cmds.register(app)
worker_cmd.register(app)
doctor_cmd.register(app)


def os_error_message(exc: OSError) -> str:
    where = exc.filename or "a file"
    if exc.errno == errno.ENOSPC:
        return f"{where}: disk full; free space and rerun (what was recorded before is kept)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return (
            f"{where}: not writable ({exc.strerror}); the study folder is read-only here: copy "
            "it somewhere writable, or give --out a writable folder"
        )
    return f"{where}: {exc.strerror or exc}"


def main() -> None:
    """Run the CLI; user errors print one line (exit 2), `--debug` shows the traceback."""
    argv = sys.argv[1:]
    debug = "--debug" in argv
    if debug:
        argv = [a for a in argv if a != "--debug"]
    try:
        # Standalone mode: Typer/Click print usage errors themselves (exit 2) and exit.
        app(args=argv, prog_name="stagewise")
    except StagewiseError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        if isinstance(exc, ClusterLost):
            # The cluster's client library may block at interpreter exit waiting for the lost
            # head (Ray's shutdown does); everything is recorded, so leave at once.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        # The machine refused a write or a read (a read-only study, a full disk): the user's to
        # fix, so one line with the file and what to do, exit 2.
        if debug:
            raise
        err_console.print(f"error: {os_error_message(exc)}", markup=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:  # the last line of defence against tracebacks
        if debug:
            raise
        err_console.print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            markup=False,
            soft_wrap=True,
        )
        sys.exit(1)
