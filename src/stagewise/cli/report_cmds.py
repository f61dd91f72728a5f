"""Report commands: report (self-contained HTML + tables + figures), bundle, verify."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stagewise.cli.common import console, emit_json, err_console
from stagewise.errors import BundleError
from stagewise.paths import out_folder_problem
from stagewise.words import plural

StudyDir = Annotated[Path, typer.Argument(help="Study folder (holds study.toml and the ledger).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def _check_out(out: Path | None) -> None:
    problem = None if out is None else out_folder_problem(out)
    if problem is not None:
        raise BundleError(f"--out {problem}")


def report(
    folder: StudyDir,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: STUDY/report).")
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Write report.html (self-contained) with every table as CSV/JSON and every figure."""
    from stagewise.report.html import write_report

    _check_out(out)
    result = write_report(folder, out)
    drawn = sum(1 for f in result.figures if f.png is not None)
    if json_:
        emit_json(
            {
                "html": str(result.html),
                "tables": [t.name for t in result.tables],
                "figures": [f.name for f in result.figures if f.png is not None],
                "skipped_figures": [
                    {"figure": f.name, "why": f.skipped} for f in result.figures if f.skipped
                ],
            }
        )
        return
    console.print(
        f"wrote {result.html} ({len(result.tables)} tables, {drawn} figures)", soft_wrap=True
    )
    for fig in result.figures:
        if fig.skipped:
            console.print(f"figure {fig.name} not drawn: {fig.skipped}", soft_wrap=True)


def bundle(
    folder: StudyDir,
    out: Annotated[Path, typer.Option("--out", help="Bundle folder (new, or an earlier bundle).")],
    json_: JsonFlag = False,
) -> None:
    """Write the audit bundle: study, scrubbed results, frozen rules, decisions, manifests."""
    from stagewise.audit.bundle import write_bundle

    _check_out(out)
    result = write_bundle(folder, out)
    if json_:
        emit_json(
            {
                "out": str(result.out),
                "files": len(result.files),
                "tables": result.tables,
                "figures": result.figures,
                "chain_head": result.chain_head,
                "warnings": list(result.leaks),
            }
        )
        return
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
    json_: JsonFlag = False,
) -> None:
    """Re-hash every file, prove the records against the chain, re-derive every table and
    figure from the bundled results and frozen rules; exit 1 on any difference."""
    from stagewise.audit.verify import verify_bundle

    result = verify_bundle(bundle_dir, expect=expect)
    if json_:
        emit_json(
            {
                "ok": result.ok,
                "problems": list(result.problems),
                "notes": list(result.notes),
                "files": result.files,
                "events": result.events,
                "commitments": result.commitments,
                "frozen": result.frozen,
                "frozen_unchecked": result.frozen_unchecked,
                "tables": result.rederived,
                "figures": result.figures,
                "chain_head": result.chain_head,
                "summary": result.summary(),
                "unchecked": list(result.unchecked),
            }
        )
        if not result.ok:
            raise typer.Exit(1)
        return
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    if result.ok:
        console.print(f"OK: {result.summary()}", soft_wrap=True)
        console.print(f"chain head: {result.chain_head}", soft_wrap=True)
        _unchecked(result.unchecked)
        return
    for problem in result.problems:
        console.print(f"MISMATCH: {problem}", markup=False, soft_wrap=True)
    console.print(
        f"FAILED: {plural(len(result.problems), 'problem')}; {result.summary()}", soft_wrap=True
    )
    _unchecked(result.unchecked)
    raise typer.Exit(1)


def _unchecked(items: list[str]) -> None:
    for item in items:
        console.print(f"informational (not checked): {item}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(report)
    app.command()(bundle)
    app.command()(verify)
