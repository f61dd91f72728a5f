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


def confidence_method(seed: int, verdict_replicates: int, replicates: int, level: float) -> str:
    """How a gate's verdict confidence was computed, in the one sentence the decision record,
    the terminal and the report's confidence table all print (the method as the JSON names
    it, then the numbers of this evaluation)."""
    return (
        f"{BOOTSTRAP_METHOD} (seed {seed}); p_verdict = share of {verdict_replicates} "
        f"replicates returning the observed verdict, decisive when >= {level:g}; "
        f"{level:.0%} percentile intervals over {replicates} replicates; {DESCRIPTIVE}"
    )


# Why a recomputed number may read differently from a published one in its last digit.
PRECISION_NOTE = "the published cells are rounded to six decimals before pooling"


def promoted_set_changes(changed: int, left_out: int) -> str:
    """The leave-one-cell-out stability of a gate, as every rendering words it."""
    return f"promoted set changes in {changed} of {left_out}"


def sentence(text: str) -> str:
    """A clause as a sentence of a record: capitalised, ending in a full stop."""
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
