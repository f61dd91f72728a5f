"""The one place the report layer calls the gates/analysis engine.

The report never recomputes an analysis itself: gate tables, rank agreement, sensitivity and
budget come from `stagewise.gates` (`result_from_runs`, `sensitivity`, `budget`), which are
pure functions over the study and run records. This adapter returns their typed results, or
None with the reason where the engine has nothing to say yet (no results, a gate edited after
freezing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stagewise.errors import StagewiseError
from stagewise.gates.budget import BudgetResult, budget
from stagewise.gates.decide import result_from_runs
from stagewise.gates.freeze import changes_since_freeze as _changes
from stagewise.gates.results import GateResult
from stagewise.gates.sensitivity import SensitivityGrid, sensitivity
from stagewise.ledger import FreezeRecord, Ledger, RunRecord
from stagewise.study.model import Study


def gate_result_from_runs(
    study: Study,
    runs: Sequence[RunRecord],
    gate_id: str,
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    freeze: FreezeRecord | None = None,
    history: Sequence[FreezeRecord] = (),
) -> tuple[GateResult | None, str]:
    """The same result from run records alone (what `verify` rebuilds from a bundle)."""
    try:
        result = result_from_runs(study, gate_id, runs, candidates, freeze=freeze, history=history)
        return result, ""
    except StagewiseError as exc:
        return None, str(exc)


def sensitivity_result(
    study: Study, ledger: Ledger, gate_id: str
) -> tuple[SensitivityGrid | None, str]:
    try:
        result = sensitivity(study, ledger, gate_id)
    except StagewiseError as exc:
        return None, str(exc)
    return (result, "") if result.rows else (None, "")


def budget_result(study: Study, ledger: Ledger) -> tuple[BudgetResult | None, str]:
    try:
        return budget(study, ledger), ""
    except StagewiseError as exc:
        return None, str(exc)


def changes_since_freeze(study: Study, ledger: Ledger, gate_id: str) -> list[str]:
    """How the gate in study.toml differs from its current freeze (empty: unchanged/unfrozen)."""
    if ledger.current_freeze(gate_id) is None:
        return []
    try:
        return list(_changes(study, ledger, gate_id))
    except StagewiseError as exc:
        return [str(exc)]
