"""The types of what stagewise writes as JSON, so that mypy checks it instead of `Any`.

A `to_json()` returns a `JsonObject`: every value put in it must be a JSON value (a string,
number, bool, null, a sequence or a string-keyed mapping of those). A reader that needs a
number or a verdict reads the typed record (`GateResult`, `BudgetResult`, ...), not the JSON
form: indexing a `JsonValue` gives another `JsonValue`, which mypy will not let pass as a
float unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

JsonScalar: TypeAlias = str | int | float | bool | None
# Sequence and Mapping (not list and dict) so that a list[float] or a dict[str, int] built
# by a writer is a JSON value without a copy: both are covariant in their values.
JsonValue: TypeAlias = JsonScalar | Sequence["JsonValue"] | Mapping[str, "JsonValue"]
JsonObject: TypeAlias = dict[str, JsonValue]

__all__ = ["JsonObject", "JsonScalar", "JsonValue"]
