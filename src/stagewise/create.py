"""`stagewise init`: a new study folder, its ledger, and the decisions an example ships with.

This spans layers (study files, the ledger, manual decisions), so it sits above the gates:
`stagewise.study.init` writes the files, the ledger records the `study.init` event and
`stagewise.gates.manual` records the example's decisions taken outside the tool.
"""

from __future__ import annotations

from pathlib import Path

from stagewise.gates.manual import apply_outside_decisions
from stagewise.ledger import Ledger
from stagewise.study.init import OUTSIDE_DECISIONS, write_study_files
from stagewise.study.load import load_study
from stagewise.study.model import Study


def init_study(folder: Path | str, example: str | None = None) -> Study:
    """Create `folder` (which must be empty or absent) and its ledger; return the loaded study."""
    target = write_study_files(folder, example)
    study = load_study(target)
    with Ledger.open(target) as ledger:
        ledger.log_event("study.init", study.name, {"example": example})
        outside = target / OUTSIDE_DECISIONS
        if outside.is_file():
            apply_outside_decisions(study, ledger, outside)
    return study


def start_new_ledger(folder: Path | str, reason: str) -> str:
    """`init DIR --new-ledger REASON`: an existing study whose ledger is lost starts a new one
    on purpose (never silently); returns the new chain head."""
    study = load_study(folder)
    with Ledger.open(study.root, new_ledger=reason) as ledger:
        return ledger.head
