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


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


def compare_with_published(
    study_root: Path | str, stages: tuple[str, ...] | list[str], conditions: list[dict[str, object]]
) -> list[dict[str, object]]:
    """Where recomputed gate figures differ from a published pooled table of the same stages.

    A published table belongs to the gate when its name starts with one of the gate's stage ids
    and it is a pooled table (`stage3_12h_pooled`). Each numeric column present in both is
    compared at the printed precision: a difference is listed when the recomputed value, printed
    with the same number of decimals, does not read as the published digits (the recomputation
    is not bent to match; the published cells were rounded before pooling).
    """
    out: list[dict[str, object]] = []
    by_label = {str(c.get("label")): c for c in conditions}
    for name, rows in load_published(study_root).items():
        if "pooled" not in name or name.split("_")[0] not in stages:
            continue
        for row in rows:
            ours = by_label.get(row.get("label", ""))
            if ours is None:
                continue
            for column, printed in row.items():
                value = ours.get(column)
                if column == "label" or not isinstance(value, int | float) or not printed:
                    continue
                try:
                    published = float(printed)
                except ValueError:
                    continue
                digits = _decimals(printed)
                if f"{value:.{digits}f}" != printed:
                    out.append(
                        {
                            "table": f"{PUBLISHED_DIR}/{name}.csv",
                            "label": row["label"],
                            "column": column,
                            "recomputed": float(value),
                            "published": printed,
                            "abs_diff": abs(float(value) - published),
                        }
                    )
    return out
