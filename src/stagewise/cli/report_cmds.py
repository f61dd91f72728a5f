"""Report commands: report (self-contained HTML + tables + figures), bundle, verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stagewise.cli.common import console, err_console
from stagewise.errors import BundleError
from stagewise.paths import out_folder_problem

StudyDir = Annotated[Path, typer.Argument(help="Study folder (holds study.toml and the ledger).")]


def _check_out(out: Path | None) -> None:
    problem = None if out is None else out_folder_problem(out)
    if problem is not None:
        raise BundleError(f"--out {problem}")


def report(
    folder: StudyDir,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: STUDY/report).")
    ] = None,
) -> None:
    """Write report.html (self-contained) with every table as CSV/JSON and every figure."""
    from stagewise.report.html import write_report

    _check_out(out)
    result = write_report(folder, out)
    drawn = sum(1 for f in result.figures if f.png is not None)
    console.print(
        f"wrote {result.html} ({len(result.tables)} tables, {drawn} figures)", soft_wrap=True
    )
    for fig in result.figures:
        if fig.skipped:
            console.print(f"figure {fig.name} not drawn: {fig.skipped}", soft_wrap=True)


def bundle(
    folder: StudyDir,
    out: Annotated[Path, typer.Option("--out", help="Bundle folder (new, or an earlier bundle).")],
) -> None:
    """Write the audit bundle: study, scrubbed results, frozen rules, decisions, manifests."""
    from stagewise.audit.bundle import write_bundle

    _check_out(out)
    result = write_bundle(folder, out)
    console.print(
        f"wrote bundle {result.out}: {len(result.files)} files, {result.tables} tables, "
        f"{result.figures} figures; check it with: stagewise verify {result.out} "
        f"--expect {result.chain_head}",
        soft_wrap=True,
    )
    console.print(f"chain head: {result.chain_head}", soft_wrap=True)
    for leak in result.leaks:
        err_console.print(f"warning: {leak}", markup=False, soft_wrap=True)


def verify(
    bundle_dir: Annotated[Path, typer.Argument(help="An audit bundle made by stagewise bundle.")],
    expect: Annotated[
        str | None,
        typer.Option(
            "--expect",
            help="The chain head published elsewhere (a paper, a commit message); a bundle "
            "whose chain ends elsewhere fails.",
        ),
    ] = None,
) -> None:
    """Re-hash every file, prove the records against the chain, re-derive every table and
    figure from the bundled results and frozen rules; exit 1 on any difference."""
    from stagewise.audit.verify import verify_bundle

    result = verify_bundle(bundle_dir, expect=expect)
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    if result.ok:
        console.print(f"OK: {result.summary()}", soft_wrap=True)
        console.print(f"chain head: {result.chain_head}", soft_wrap=True)
        _unchecked(result.unchecked)
        return
    for problem in result.problems:
        console.print(f"MISMATCH: {problem}", markup=False, soft_wrap=True)
    console.print(f"FAILED: {len(result.problems)} problem(s); {result.summary()}", soft_wrap=True)
    _unchecked(result.unchecked)
    raise typer.Exit(1)


def _unchecked(items: list[str]) -> None:
    for item in items:
        console.print(f"informational (not checked): {item}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(bundle)
    app.command()(verify)
