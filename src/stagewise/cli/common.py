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

from stagewise.ledger import Ledger
from stagewise.study import Study, load_study

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _clean(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_clean(value), indent=2, ensure_ascii=False) + "\n")


@contextmanager
def open_study(folder: Path) -> Iterator[tuple[Study, Ledger]]:
    study = load_study(folder)
    with Ledger.open(study.root, create=False) as ledger:
        yield study, ledger


def fmt(value: float | None, digits: int = 6) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"
