"""Everything a report or bundle shows: a `StudySnapshot` (read once) and what the report adds."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from stagewise.analysis.published import covered_stages, outside_freezes
from stagewise.gates.budget import BudgetResult, hours_unit
from stagewise.gates.results import GateResult
from stagewise.gates.sensitivity import SensitivityGrid
from stagewise.ledger import DecisionRecord, Event, FreezeRecord, Ledger, RunRecord
from stagewise.plan import Plan
from stagewise.report.published import PublishedTable, load_published_tables
from stagewise.snapshot import GateSnapshot, StudySnapshot
from stagewise.status import StageRuns, stage_runs
from stagewise.study.model import Gate, Study


@dataclass
class GateView:
    """A gate as the report shows it: the snapshot's gate, the published tables shown beside
    it and what is still missing, in words."""

    snapshot: GateSnapshot
    gate_result: GateResult | None  # when computable (and results exist)
    sensitivity_grid: SensitivityGrid | None
    published: list[PublishedTable]
    pending: list[str] = field(default_factory=list)  # what is still missing, in words

    @property
    def gate(self) -> Gate:
        return self.snapshot.gate

    @property
    def gate_id(self) -> str:
        return self.gate.gate_id

    @property
    def freezes(self) -> tuple[FreezeRecord, ...]:
        return self.snapshot.freezes

    @property
    def decisions(self) -> tuple[DecisionRecord, ...]:
        """Every decision, withdrawn ones included."""
        return self.snapshot.decisions

    @property
    def active(self) -> DecisionRecord | None:
        return self.snapshot.active

    @property
    def cells(self) -> tuple[RunRecord, ...]:
        """Succeeded results of the gate's stages, by host, seed and matrix order."""
        return self.snapshot.cells

    @property
    def current_freeze(self) -> FreezeRecord | None:
        return self.snapshot.current_freeze


@dataclass
class ReportContext:
    """Everything a report shows: a snapshot of the study, and what the report adds to it."""

    snapshot: StudySnapshot
    gates: list[GateView]
    published: list[PublishedTable]

    @property
    def study(self) -> Study:
        return self.snapshot.study

    @property
    def plan(self) -> Plan:
        return self.snapshot.plan

    @property
    def runs(self) -> tuple[RunRecord, ...]:
        return self.snapshot.runs

    @property
    def events(self) -> tuple[Event, ...]:
        return self.snapshot.events

    @property
    def chain_problems(self) -> tuple[str, ...]:
        return self.snapshot.chain_problems

    @property
    def budget_result(self) -> BudgetResult | None:
        return self.snapshot.budget

    @property
    def budget_note(self) -> str:
        return self.snapshot.budget_note

    @cached_property
    def stage_runs(self) -> tuple[StageRuns, ...]:
        """Each planned stage's runs by state (the stages of `stagewise status --json`)."""
        return stage_runs(self.snapshot)

    def gate(self, gate_id: str) -> GateView:
        for view in self.gates:
            if view.gate_id == gate_id:
                return view
        raise KeyError(gate_id)

    def label(self, condition_id: str) -> str:
        try:
            return self.study.condition(condition_id).label
        except KeyError:
            return condition_id

    @property
    def hours_unit(self) -> str:
        """ "CPU-hours" for a study whose runs ran on CPU, else "GPU-hours" (gates.budget)."""
        if self.budget_result is not None:
            return self.budget_result.hours_unit
        return hours_unit(self.study, self.runs)


def collect(study: Study, ledger: Ledger) -> ReportContext:
    """The report's context of the study as its ledger holds it now."""
    return report_context(StudySnapshot.read(study, ledger))


def report_context(snap: StudySnapshot) -> ReportContext:
    """What the report shows of a snapshot: each gate with what is still missing, in words."""
    published = load_published_tables(snap.study)
    frozen_outside = outside_freezes(published)  # gates written down before their stages
    covered = covered_stages(snap.study, published)  # stages known from a published summary
    views = []
    for g in snap.gates:
        pending = []
        result, sensitivity = None, None
        if g.cells:
            result = g.result
            if result is None:
                pending.append(f"analysis not available: {g.result_note}")
            sensitivity = g.sensitivity
            if g.sensitivity_note:
                pending.append(f"sensitivity not available: {g.sensitivity_note}")
        if not g.freezes and g.gate_id not in frozen_outside:
            pending.append("rule not frozen yet")
        if g.changes_since_freeze:
            pending.append(
                "study.toml differs from the frozen rule (stagewise gate refuses it until an "
                "amendment is frozen): " + "; ".join(g.changes_since_freeze)
            )
        missing = [s for s in g.gate.stages if s not in covered]
        if not g.cells and missing:
            pending.append(f"no results yet for {', '.join(missing)}")
        if g.active is None:
            pending.append("no decision recorded")
        views.append(
            GateView(
                snapshot=g,
                gate_result=result,
                sensitivity_grid=sensitivity,
                published=[p for p in published if p.gate == g.gate_id],
                pending=pending,
            )
        )
    return ReportContext(snapshot=snap, gates=views, published=published)
