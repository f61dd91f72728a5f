"""Shared field checks for `study.toml`: the file-naming context, typo hints, strings and lists.

Every section parser (load.py, load_runner.py, load_hosts.py, load_stages.py, load_gates.py)
reports through a `TomlContext`, so each message starts with the file and the key.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from stagewise.errors import StudyError
from stagewise.paths import id_problem


class TomlContext:
    """Carries the file name so every message can start with it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> StudyError:
        return StudyError(f"{self.path}: {key}: {message}")

    def known_keys(self, where: str, table: dict[str, Any], known: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                raise self.fail(f"{where}{key}", f"unknown key; {nearest(key, known)}")

    def safe_id(self, key: str, value: str) -> str:
        problem = id_problem(value)
        if problem is not None:
            raise self.fail(key, problem)
        return value


def nearest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(known)}"


def non_empty_str(ctx: TomlContext, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.fail(key, f"expected a non-empty string, but got {value!r}")
    return value.strip()


def str_list(
    ctx: TomlContext, key: str, value: Any, *, allow_empty: bool = False
) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ctx.fail(key, f"expected a list of strings, but got {value!r}")
    if not value and not allow_empty:
        # An empty list would silently mean "all" or "none"; say which instead.
        raise ctx.fail(key, "expected at least one entry, but got []; leave the key out instead")
    if len(set(value)) != len(value):
        raise ctx.fail(key, f"duplicate entries in {value!r}")
    return tuple(value)


def argv_list(ctx: TomlContext, key: str, value: Any) -> tuple[str, ...]:
    """A command (`runner.command`, `hosts.<name>.command`): a non-empty list of strings."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ctx.fail(
            key, f'expected an argv list such as ["python", "train.py"], but got {value!r}'
        )
    return tuple(value)
