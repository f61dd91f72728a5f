"""What every command shares: the console, JSON output, opening a study and its ledger."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from stagewise.budget_units import json_safe as _clean
from stagewise.ledger import Ledger
from stagewise.study import Study, load_study

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
