"""Budgets as people write them and as the tool stores them.

Wall-clock (`300`, `90s`, `10m`, `12h`) is stored as seconds; a budget may also count tokens
(`50Mtok`) or optimizer steps (`2000steps`), which removes host speed from the comparison.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string with an optional s/m/h/d suffix; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"expected seconds or a string like '10m', but got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _PATTERN.match(value)
        if not match:
            raise ValueError(
                f"expected seconds or a string like '90s', '10m', '12h', but got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"expected seconds or a string like '10m', but got {value!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a budget must be a positive, finite duration, but got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form: 7200 -> '2h', 600 -> '10m', 4 -> '4s'."""
    for unit, size in (("h", 3600.0), ("m", 60.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    return f"{seconds:g}s"


def format_eta(seconds: float | None, unknown: str = "-") -> str:
    """A remaining time for a progress line: 42s, 3m05s, 2h07m (`unknown` when not known)."""
    if seconds is None:
        return unknown
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"


def json_safe(value: object) -> object:
    """JSON has no NaN or infinity: non-finite floats become null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


# ---------------------------------------------------------------------- tokens and steps
BudgetUnit = Literal["seconds", "tokens", "steps"]
_MULTIPLIERS = {"": 1.0, "K": 1e3, "M": 1e6, "B": 1e9}
_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMB]?)\s*(tok|steps)\s*$")


@dataclass(frozen=True)
class Budget:
    """A stage's budget: wall-clock seconds (the paper's choice), tokens, or optimizer steps."""

    unit: BudgetUnit
    amount: float  # seconds, or a whole number of tokens or steps

    @property
    def seconds(self) -> float | None:
        """The wall-clock budget, or None when the budget counts tokens or steps."""
        return self.amount if self.unit == "seconds" else None

    def __str__(self) -> str:
        return format_budget(self)


def parse_budget(value: object) -> Budget:
    """`"10m"`/`600` (seconds), `"50Mtok"` (tokens), `"2000steps"` (steps); K/M/B = 1e3/1e6/1e9.

    Raises ValueError with the accepted forms.
    """
    if isinstance(value, str):
        match = _COUNT.match(value)
        if match:
            amount = float(match.group(1)) * _MULTIPLIERS[match.group(2)]
            unit: BudgetUnit = "tokens" if match.group(3) == "tok" else "steps"
            if amount < 1 or not amount.is_integer():
                raise ValueError(
                    f"a {unit} budget must be a whole number of at least 1, but got {value!r}"
                )
            return Budget(unit, amount)
    try:
        return Budget("seconds", parse_duration(value))
    except ValueError:
        raise ValueError(
            "expected seconds or a duration ('90s', '10m', '12h'), tokens ('50Mtok', '32Ktok') "
            f"or optimizer steps ('2000steps'), but got {value!r}"
        ) from None


def format_count(amount: float) -> str:
    """The shortest exact form with a K/M/B multiplier: 50e6 -> '50M', 32000 -> '32K'."""
    for suffix, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if amount >= size and (amount / size) * 1000 == int((amount / size) * 1000):
            return f"{amount / size:g}{suffix}"
    return f"{amount:g}"


def format_budget(budget: Budget) -> str:
    """The budget in its own unit, as a study file writes it: '10m', '50Mtok', '2000steps'."""
    if budget.unit == "seconds":
        return format_duration(budget.amount)
    if budget.unit == "steps":
        return f"{budget.amount:.0f}steps"
    return format_count(budget.amount) + "tok"


def round_hours(value: float | None) -> float | None:
    """Hours as the tool writes them: nine decimals.

    Sums such as 0.2 + 2 + ... + 72 carry binary noise (169.20000000000002); nine decimals is
    far below a second of GPU time and prints the hours as a person would write them. Every
    writer of hours (plan, budget, report) rounds through here, so they agree to the digit.
    """
    return None if value is None else round(value, 9)
