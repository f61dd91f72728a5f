"""`stagewise worker` (internal): a warm worker, our runner kept alive for one executor slot.

An executor starts one per slot and sends it runs (the options `stagewise train` would get) one
at a time; the worker trains each in this process, so Python, torch and stagewise are imported
once and the data's pages stay cached, while every run still gets a fresh model and optimizer,
its own seeds, its thread count and an empty inductor/dynamo state (see runner/loop.py). The
wire format is in `stagewise.protocol` (WORKER_*). A run that does not succeed ends the worker:
whatever it broke (CUDA after an OOM, a half-initialised module) goes with it, and the slot
starts a fresh one for its next run.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import typer

from stagewise.errors import StagewiseError
from stagewise.protocol import EXIT_BAD_INPUT, WORKER_READY, parse_worker_request, worker_done

EXIT_INTERRUPTED = 130


def _train_command() -> Any:
    """`stagewise train` as a click command that returns its exit code instead of exiting."""
    from stagewise.cli.runner_cmds import train

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train)
    return typer.main.get_command(app)


@contextlib.contextmanager
def _run_environment(env: Mapping[str, str], cwd: str) -> Iterator[None]:
    """The run's environment variables and folder, put back afterwards."""
    saved = {name: os.environ.get(name) for name in env}
    here = os.getcwd()
    os.environ.update(env)
    try:
        os.chdir(cwd)
        yield
    finally:
        os.chdir(here)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def usage_error(exc: BaseException) -> str | None:
    """The one-line message of a command-line usage error raised by typer, else None.

    typer raises its own exception classes since 0.26 (it vendors click) and click's before;
    its public API names no base class common to both, but both carry `exit_code` and
    `format_message()`, which is what a usage error is here. Never `import click`: newer typer
    does not install it, and where it is installed its classes are not the ones typer raises."""
    message = getattr(exc, "format_message", None)
    if not callable(message) or not isinstance(getattr(exc, "exit_code", None), int):
        return None
    return str(message())


def run_one(command: Any, args: list[str], env: Mapping[str, str], cwd: str) -> int:
    """One run, in this process; returns the exit code `stagewise train` would have."""
    with _run_environment(env, cwd):
        try:
            result = command.main(args=args, prog_name="stagewise train", standalone_mode=False)
            code = int(result or 0)
        except StagewiseError as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = exc.exit_code
        except (KeyboardInterrupt, typer.Abort):
            # SIGTERM from the executor (`stagewise train` turns it into KeyboardInterrupt,
            # which typer reports as Abort); the summary already says "interrupted".
            print("interrupted", file=sys.stderr)
            code = EXIT_INTERRUPTED
        except Exception as exc:
            message = usage_error(exc)
            if message is None:
                traceback.print_exc()
                code = 1
            else:
                print(f"error: {message}", file=sys.stderr)
                code = EXIT_BAD_INPUT
    _release()
    return code


def _release() -> None:
    """Give back what the run held, and reset process-wide switches a run may have set."""
    gc.collect()
    torch: Any = sys.modules.get("torch")
    if torch is not None:
        torch.use_deterministic_algorithms(False)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()


def worker() -> None:
    """(internal) Train the runs an executor sends on stdin, one at a time, in this process."""
    import torch  # noqa: F401 - imported once here; the point of a warm worker

    import stagewise.runner.loop  # noqa: F401

    command = _train_command()
    print(WORKER_READY, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            args, env, cwd = parse_worker_request(line)
        except (ValueError, KeyError, TypeError) as exc:
            print(f"error: bad worker request: {exc}", file=sys.stderr, flush=True)
            code = EXIT_BAD_INPUT
        else:
            code = run_one(command, args, env, cwd)
        sys.stderr.flush()
        print(worker_done(code), flush=True)
        if code != 0:
            break


def register(app: typer.Typer) -> None:
    app.command("worker", hidden=True)(worker)
