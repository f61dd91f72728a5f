"""How the report labels published summary tables (loaded by `stagewise.analysis.published`).

A report shows them as they are, labelled "published summary (not recomputed)", and the figures
use them only where no recomputed gate exists.
"""

from __future__ import annotations

from stagewise.analysis.published import (
    PUBLISHED_DIR,
    PublishedTable,
    as_float,
    load_published_tables,
)

__all__ = [
    "PUBLISHED_DIR",
    "PUBLISHED_LABEL",
    "PublishedTable",
    "as_float",
    "load_published_tables",
]

PUBLISHED_LABEL = "published summary (not recomputed)"
