"""`stagewise doctor`: is this machine ready to train? One line per check, with the fix."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from stagewise.cli.common import console, emit_json
from stagewise.errors import StudyError


def doctor(
    data: Annotated[
        Path | None,
        typer.Option(help="Data folder to check (default ./data; the embedded sample if absent)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cuda, cuda:N or cpu.")] = "auto",
    depth: Annotated[
        int | None, typer.Option(help="Smoke model depth (default 8 on a GPU, 2 on CPU).")
    ] = None,
    aspect_ratio: Annotated[
        int | None, typer.Option(help="Smoke model aspect ratio (default 64 on a GPU, 32 on CPU).")
    ] = None,
    device_batch_size: Annotated[
        int | None, typer.Option(help="Smoke rows per step (default: the runner's on a GPU).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Smoke training steps.")] = 20,
    compile_check: Annotated[
        bool, typer.Option("--compile", help="Also check torch.compile on a CPU.")
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke/--no-smoke", help="Run the short smoke training.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
    host: Annotated[
        str | None,
        typer.Option(
            help="A Slurm host block of the study: submit one short smoke job with its settings "
            "and report the queue wait, the node and the device instead."
        ),
    ] = None,
    study: Annotated[
        Path | None,
        typer.Option(
            help="The study folder whose --host is checked (default .); without --host, the "
            "smoke run's seconds per step go to its doctor.json (else the user cache's) for "
            "`freeze` to estimate steps with."
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="With --host: longest wait for the smoke job (seconds).")
    ] = 600.0,
) -> None:
    """Check torch, the device, bf16, compile, flex attention and data, then train 20 steps.

    Prints tokens/s, MFU (where the GPU's peak is known), peak memory and the steps a 5-minute
    budget would train. Exit code 1 when a check fails."""
    from stagewise.doctor import record_rate, run_doctor

    if host is not None:
        from stagewise.doctor_slurm import slurm_doctor
        from stagewise.study import load_study

        report = slurm_doctor(load_study(study or Path(".")), host, timeout=timeout)
        _show(report, as_json)
        return
    if study is not None and not (study / "study.toml").is_file():
        raise StudyError(f"--study {study}: no study.toml there (give a study folder)")
    size = {
        k: v
        for k, v in (
            ("depth", depth),
            ("aspect_ratio", aspect_ratio),
            ("device_batch_size", device_batch_size),
        )
        if v is not None
    }
    report = run_doctor(
        data=data, device=device, size=size, steps=steps, compile_check=compile_check, smoke=smoke
    )
    try:
        kept = record_rate(report.smoke, study.resolve() if study is not None else None)
    except OSError as exc:  # a read-only cache must not fail the checks
        kept = None
        if not as_json:
            console.print(f"note: could not keep the measurement: {exc}", markup=False)
    if kept is not None and not as_json:
        console.print(f"measured seconds per step kept in {kept} (for `freeze`)", markup=False)
    _show(report, as_json)


def _show(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_json())
    else:
        for check in report.checks:
            console.print(check.line(), markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
