"""StudySnapshot: one read of the ledger and one plan per snapshot, whatever reads it."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import stagewise.plan
from stagewise.audit.bundle import write_bundle
from stagewise.gates.budget import budget
from stagewise.gates.sensitivity import sensitivity
from stagewise.ledger import Ledger
from stagewise.report.context import collect
from stagewise.snapshot import StudySnapshot
from stagewise.status import study_status
from stagewise.study import load_study
from tests.report.conftest import paper06, synthetic

__all__ = ["paper06", "synthetic"]


class Counts:
    def __init__(self) -> None:
        self.plans = 0
        self.runs = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    """Count every `build_plan` (wherever a module imported it) and every `Ledger.runs`."""
    seen = Counts()
    original_plan = stagewise.plan.build_plan
    original_runs = Ledger.runs

    def plan(*args: Any, **kwargs: Any) -> Any:
        seen.plans += 1
        return original_plan(*args, **kwargs)

    def runs(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        seen.runs += 1
        return original_runs(self, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("stagewise") and getattr(module, "build_plan", None) is original_plan:
            monkeypatch.setattr(module, "build_plan", plan)
    monkeypatch.setattr(Ledger, "runs", runs)
    yield seen


def test_a_bundle_of_paper06_builds_the_plan_once_and_reads_the_runs_once(
    paper06: Path, tmp_path: Path, counts: Counts
) -> None:
    result = write_bundle(paper06, tmp_path / "bundle")
    assert result.tables > 0 and not result.leaks
    assert (counts.plans, counts.runs) == (1, 1)


def test_the_report_context_reads_once(synthetic: Path, counts: Counts) -> None:
    study = load_study(synthetic)
    with Ledger.open(study.root, create=False) as ledger:
        ctx = collect(study, ledger)
    # Everything below is derived from the snapshot: no further plan, no further read.
    assert ctx.stage_runs and ctx.budget_result is not None
    for view in ctx.gates:
        _ = view.snapshot.changes_since_freeze, view.gate_result, view.sensitivity_grid
    assert (counts.plans, counts.runs) == (1, 1)


def _derived(snap: StudySnapshot) -> list[Callable[[], Any]]:
    return [lambda: snap.budget, *[(lambda g=g: (g.result, g.sensitivity)) for g in snap.gates]]


def test_the_snapshot_agrees_with_the_ledger_readers(paper06: Path) -> None:
    """Status, budget and sensitivity of a snapshot are what the ledger-reading calls give."""
    study = load_study(paper06)
    with Ledger.open(study.root, create=False) as ledger:
        snap = StudySnapshot.read(study, ledger)
        assert snap.budget is not None
        assert snap.budget.to_json() == budget(study, ledger).to_json()
        grid = snap.gate("g12h").sensitivity
        assert grid is not None
        assert grid.to_json() == sensitivity(study, ledger, "g12h").to_json()
        from stagewise.status import status_of

        assert status_of(snap) == study_status(study, ledger)
    result = snap.gate("g12h").result
    assert result is not None and result.frozen_sha256 == snap.gate("g12h").freezes[-1].sha256
    for fn in _derived(snap):
        fn()  # computed after the ledger is closed: nothing is read from it again


def test_a_snapshot_is_immutable(paper06: Path) -> None:
    study = load_study(paper06)
    with Ledger.open(study.root, create=False) as ledger:
        snap = StudySnapshot.read(study, ledger)
    with pytest.raises(AttributeError):
        snap.runs = ()  # type: ignore[misc]
    assert isinstance(snap.runs, tuple) and isinstance(snap.gates, tuple)
