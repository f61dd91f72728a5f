"""Threshold sensitivity: a threshold rule's verdict re-evaluated over a grid of thresholds.

For one observed statistic (a gap) and a threshold rule `value <= t` (inclusive, with the rule
tolerance, `stagewise.analysis.thresholds.within`), the verdict at each grid point, the smallest grid point at which it passes, and the
exact threshold at which it flips (the observed value itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagewise.analysis.thresholds import within

DEFAULT_GRID: tuple[float, ...] = tuple(round(0.005 * i, 10) for i in range(1, 7))


def parse_grid(text: str) -> tuple[float, ...]:
    """`0.005,0.01,0.02` -> sorted unique floats; ValueError names the bad item."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"grid value {item!r} is not a number") from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"grid value {item!r} must be a finite number >= 0")
        out.append(value)
    if not out:
        raise ValueError("the grid is empty")
    return tuple(sorted(set(out)))


@dataclass(frozen=True)
class Sweep:
    observed: float | None
    grid: tuple[float, ...]
    verdicts: tuple[str, ...]  # "pass" | "fail" | "undefined" per grid point
    smallest_passing: float | None  # smallest grid point that passes
    flip_threshold: float | None  # the exact threshold from which it passes

    def note(self) -> str:
        if self.observed is None:
            return "undefined (the reference lacks a cell)"
        top = max(self.grid)
        if self.smallest_passing is None:
            return f"fails through {top:.3f}"
        if self.smallest_passing == min(self.grid):
            return f"passes across the grid (from {self.smallest_passing:.3f})"
        return f"would pass from {self.smallest_passing:.3f} (flips at {self.observed:.6f})"


def sweep(observed: float | None, grid: Sequence[float] = DEFAULT_GRID) -> Sweep:
    grid = tuple(grid)
    if observed is None:
        return Sweep(None, grid, tuple("undefined" for _ in grid), None, None)
    verdicts = tuple("pass" if within(observed, t) else "fail" for t in grid)
    smallest = next((t for t, v in zip(grid, verdicts, strict=True) if v == "pass"), None)
    return Sweep(observed, grid, verdicts, smallest, observed)
