"""What every command shares: the console, JSON output, opening a study and its ledger."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from stagewise.budget_units import json_safe as _clean
from stagewise.ledger import Ledger
from stagewise.study import Study, load_study

# `--seed` meant four things across commands (a run's seed, the gate's bootstrap, the seed
# planner's simulations, the back-test's replays); each now has its own name, and the old
# spelling still works, hidden, so scripts keep running.
SeedAlias = Annotated[int | None, typer.Option("--seed", hidden=True)]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_clean(value), indent=2, ensure_ascii=False) + "\n")


@contextmanager
def open_study(folder: Path, *, start: bool = False) -> Iterator[tuple[Study, Ledger]]:
    """The study and its ledger. Reading commands never create a ledger; the commands that record
    (`start=True`: freeze, import, decide, run, curves) start the ledger of a hand-written study
    that has recorded nothing yet, as `init` would. A folder that shows recorded work but has no
    ledger is refused either way (the ledger refuses it and names the backup)."""
    study = load_study(folder)
    with Ledger.open(study.root, create=start) as ledger:
        yield study, ledger


def fmt_count(value: int | None) -> str:
    return "-" if value is None else str(value)


def fmt(value: float | None, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def print_flagged(rows: list[dict[str, Any]], min_steps: int) -> None:
    """Succeeded runs whose result cannot mean much, one line each (status, gate, run)."""
    if not rows:
        return
    from stagewise.words import plural

    console.print(
        f"[yellow]flagged[/]: {plural(len(rows), 'run')} (min_steps = {min_steps}; "
        "flagged runs are still ranked: read their numbers with care)"
    )
    for r in rows:
        console.print(
            f"  {r['run']}: {', '.join(r['flags'])}: {'; '.join(r['notes'])}",
            markup=False,
            soft_wrap=True,
        )
