"""What `stagewise verify` found: problems (any one fails the bundle), notes and counts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Files or parts of files verify does not check (listed in its output, never passed over).
    unchecked: list[str] = field(default_factory=list)
    files: int = 0
    frozen: int = 0
    frozen_unchecked: int = 0
    events: int = 0
    rederived: int = 0
    commitments: int = 0
    figures: int = 0
    chain_head: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        scrubbed = (
            f" ({self.frozen_unchecked} shown masked, proven through the chain)"
            if self.frozen_unchecked
            else ""
        )
        return (
            f"{self.files} files re-hashed, {self.events} events linked (head "
            f"{self.chain_head}), {self.commitments} records proven against the chain, "
            f"{self.frozen} frozen rules re-hashed{scrubbed}, {self.rederived} tables and "
            f"{self.figures} figures re-derived"
        )


def load_json(path: Path, report: VerifyReport) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError, RecursionError) as exc:
        # ValueError covers bad UTF-8, bad JSON and integers over Python's digit limit;
        # RecursionError JSON nested deeper than the parser goes.
        report.problems.append(f"{path.name}: unreadable ({type(exc).__name__}: {exc!s:.200})")
        return None
