"""Budgets as people write them (`300`, `90s`, `10m`, `12h`) and as the tool stores them (seconds)."""

from __future__ import annotations

import math
import re

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
