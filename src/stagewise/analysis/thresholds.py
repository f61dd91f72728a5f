"""The one threshold comparison: what "value <= threshold" means for every rule and grid.

Gate rules (`stagewise.gates.rules`) and the threshold-sensitivity grid
(`stagewise.analysis.sensitivity`) both call `within`, so a gate's verdict and the grid's
verdict at the declared threshold can never disagree.
"""

from __future__ import annotations

# Thresholds are inclusive and compared with this tolerance, so a value printed as exactly the
# threshold (0.01 computed as 0.010000000000000009) is not failed by binary floating-point noise.
TOLERANCE = 1e-9


def within(value: float, threshold: float) -> bool:
    """value <= threshold, inclusive, with the rule tolerance."""
    return value <= threshold + TOLERANCE


def threshold_text(value: float) -> str:
    """A threshold as written for a reader: three decimals at least (0.010, 0.025), as the paper
    prints its rules, and every digit it has beyond them (0.0001, 0.0125)."""
    text = f"{float(value):.3f}"
    return text if float(text) == float(value) else repr(float(value))
