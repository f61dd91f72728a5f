"""Wording every rendering of a gate result shares: said once, read by the decision records,
the terminal and the HTML report alike (and by the gate JSON, where it is a value)."""

from __future__ import annotations

# What the verdict confidence resamples: the `method` of the gate JSON's `confidence` object.
BOOTSTRAP_METHOD = (
    "blocked bootstrap: host blocks resampled, seeds resampled within hosts; "
    "every rule of the gate re-applied to each replicate"
)
# What the verdict confidence is not.
DESCRIPTIVE = "descriptive, not a significance test"
# Why a recomputed number may read differently from a published one in its last digit.
PRECISION_NOTE = "the published cells are rounded to six decimals before pooling"


def promoted_set_changes(changed: int, left_out: int) -> str:
    """The leave-one-cell-out stability of a gate, as every rendering words it."""
    return f"promoted set changes in {changed} of {left_out}"
