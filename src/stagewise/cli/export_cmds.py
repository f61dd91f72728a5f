"""Export commands: the study into a tool the researcher already uses (MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stagewise.cli.common import console, emit_json

StudyDir = Annotated[Path, typer.Argument(help="Study folder (holds study.toml and the ledger).")]


def export(
    folder: StudyDir,
    mlflow: Annotated[
        str,
        typer.Option(
            "--mlflow",
            metavar="URI",
            help="MLflow tracking URI (http://host:5000, sqlite:///mlflow.db) or a folder, "
            "which gets a SQLite store <folder>/mlflow.db. Needs stagewise[mlflow].",
        ),
    ],
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", help="Experiment name (default: the study's name)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """One MLflow experiment per study, one MLflow run per stagewise run, with params, tags,
    metrics and the train loss curve; re-exporting updates runs in place, never duplicates."""
    import logging

    from stagewise.export.mlflow import export_mlflow

    # MLflow logs its store migrations at INFO; the one-line summary below is what matters.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    result = export_mlflow(folder, mlflow, experiment)
    if json_:
        emit_json(result.to_json())
        return
    console.print(
        f"exported {result.runs} runs to MLflow experiment {result.experiment!r} "
        f"(id {result.experiment_id}): {result.created} created, {result.updated} updated, "
        f"{result.unchanged} unchanged; {result.curves} with a loss curve",
        soft_wrap=True,
        markup=False,
    )
    for conflict in result.conflicts:
        console.print(
            f"note: {conflict} (MLflow params cannot change)", soft_wrap=True, markup=False
        )
    where = (
        f"open {result.uri}"
        if result.uri.startswith(("http://", "https://"))
        else f"mlflow ui --backend-store-uri {result.uri}"
    )
    console.print(f"view it: {where}", soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    app.command()(export)
