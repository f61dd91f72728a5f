"""Counts and small figures written as a person reads them: `1 host`, `2 hosts`, `<0.01`.

A leaf (imports nothing of stagewise) so the CLI, the driver, the gates and the report all
word a count the same way.
"""

from __future__ import annotations

import math

# Nouns whose plural is not noun + "s".
_IRREGULAR = {"was": "were", "is": "are", "has": "have", "this": "these"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """`plural(1, "host")` -> "1 host", `plural(2, "host")` -> "2 hosts"."""
    return f"{count} {noun_for(count, noun, many)}"


def noun_for(count: int, noun: str, many: str | None = None) -> str:
    """The noun alone, singular for exactly one."""
    if count == 1:
        return noun
    if many is not None:
        return many
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def small(value: float | None, decimals: int = 2, missing: str = "-") -> str:
    """A non-negative figure at `decimals`, where a small non-zero value reads `<0.01`, never 0.

    `small(0.004)` -> "<0.01", `small(0.0)` -> "0", `small(1.234)` -> "1.23", None -> `missing`.
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    if value == 0:
        return "0"
    floor = 10.0**-decimals
    if 0 < abs(value) < floor:
        return f"{'-' if value < 0 else ''}<{floor:.{decimals}f}"
    return f"{value:.{decimals}f}"


__all__ = ["noun_for", "plural", "small"]
