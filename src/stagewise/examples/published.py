"""Published summary tables shipped with an example study (`published/*.csv`), as printed.

These are the pooled tables of stages whose cells were never published (paper06's earlier
gates). They are shown labelled as published summaries and never presented as recomputed.
"""

from __future__ import annotations

import csv
from pathlib import Path

PUBLISHED_DIR = "published"
PUBLISHED_LABEL = "published summary"


def load_published(study_root: Path | str) -> dict[str, list[dict[str, str]]]:
    """`published/<name>.csv` -> rows (strings, exactly as printed); empty when none ship."""
    folder = Path(study_root) / PUBLISHED_DIR
    if not folder.is_dir():
        return {}
    tables = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            tables[path.stem] = [dict(row) for row in csv.DictReader(fh)]
    return tables
