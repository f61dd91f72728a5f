"""Everything a report or bundle shows, gathered once from the study folder and its ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from stagewise.analysis.published import covered_stages, outside_freezes
from stagewise.gates.budget import BudgetResult
from stagewise.gates.results import GateResult
from stagewise.gates.sensitivity import SensitivityGrid
from stagewise.ledger import DecisionRecord, Event, FreezeRecord, Ledger, RunRecord
from stagewise.plan import Plan, build_plan
from stagewise.report import analyses
from stagewise.report.published import PublishedTable, load_published_tables
from stagewise.status import study_status
from stagewise.study.model import Gate, Study


@dataclass
class GateView:
    gate: Gate
    freezes: list[FreezeRecord]
    decisions: list[DecisionRecord]  # every decision, withdrawn ones included
    active: DecisionRecord | None
    gate_result: GateResult | None  # when computable
    sensitivity_grid: SensitivityGrid | None
    cells: list[dict[str, Any]]  # succeeded results of the gate's stages
    published: list[PublishedTable]
    pending: list[str] = field(default_factory=list)  # what is still missing, in words

    @property
    def gate_id(self) -> str:
        return self.gate.gate_id

    @property
    def current_freeze(self) -> FreezeRecord | None:
        return self.freezes[-1] if self.freezes else None

    @cached_property
    def result(self) -> dict[str, Any] | None:
        """The `stagewise gate --json` object of `gate_result` (what tables serialise)."""
        return self.gate_result.to_json() if self.gate_result is not None else None

    @cached_property
    def sensitivity(self) -> dict[str, Any] | None:
        """The `stagewise sensitivity --json` object of `sensitivity_grid`."""
        return self.sensitivity_grid.to_json() if self.sensitivity_grid is not None else None


@dataclass
class ReportContext:
    study: Study
    plan: Plan
    status: dict[str, Any]
    runs: list[RunRecord]
    events: list[Event]
    chain_problems: list[str]
    gates: list[GateView]
    budget_result: BudgetResult | None
    budget_note: str
    published: list[PublishedTable]

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

    @cached_property
    def plan_dict(self) -> dict[str, Any]:
        """The `stagewise plan --json` object."""
        return self.plan.to_json()

    @cached_property
    def budget(self) -> dict[str, Any] | None:
        """The `stagewise budget --json` object of `budget_result`."""
        return self.budget_result.to_json() if self.budget_result is not None else None


def gate_cells(study: Study, runs: Sequence[Any], gate: Gate) -> list[dict[str, Any]]:
    out = []
    for rec in runs:
        if rec.stage in gate.stages and rec.status == "succeeded" and rec.val_bpb is not None:
            out.append(
                {
                    "stage": rec.stage,
                    "condition_id": rec.condition_id,
                    "seed": rec.seed,
                    "host": rec.host,
                    "val_bpb": rec.val_bpb,
                }
            )
    order = {cid: i for i, cid in enumerate(study.condition_ids)}
    out.sort(key=lambda c: (c["host"], c["seed"], order.get(c["condition_id"], 10**9)))
    return out


def collect(study: Study, ledger: Ledger) -> ReportContext:
    plan = build_plan(study, ledger)
    runs = ledger.runs()
    published = load_published_tables(study)
    frozen_outside = outside_freezes(published)  # gates written down before their stages
    covered = covered_stages(study, published)  # stages known from a published summary
    views = []
    for gate in study.gates.values():
        cells = gate_cells(study, runs, gate)
        freezes = ledger.freezes(gate.gate_id)
        decisions = ledger.decisions(gate.gate_id)
        active = ledger.active_decision(gate.gate_id)
        pending = []
        result, sensitivity = None, None
        if cells:
            result, why = analyses.gate_result_from_runs(
                study,
                runs,
                gate.gate_id,
                plan.candidates,  # the plan built once above, not again per gate
                freeze=ledger.current_freeze(gate.gate_id),
                history=freezes,
            )
            if result is None:
                pending.append(f"analysis not available: {why}")
            sensitivity, why = analyses.sensitivity_result(study, ledger, gate.gate_id)
            if why:
                pending.append(f"sensitivity not available: {why}")
        if not freezes and gate.gate_id not in frozen_outside:
            pending.append("rule not frozen yet")
        edited = analyses.changes_since_freeze(study, ledger, gate.gate_id)
        if edited:
            pending.append(
                "study.toml differs from the frozen rule (stagewise gate refuses it until an "
                "amendment is frozen): " + "; ".join(edited)
            )
        missing = [s for s in gate.stages if s not in covered]
        if not cells and missing:
            pending.append(f"no results yet for {', '.join(missing)}")
        if active is None:
            pending.append("no decision recorded")
        views.append(
            GateView(
                gate=gate,
                freezes=freezes,
                decisions=decisions,
                active=active,
                gate_result=result,
                sensitivity_grid=sensitivity,
                cells=cells,
                published=[p for p in published if p.gate == gate.gate_id],
                pending=pending,
            )
        )
    budget, budget_note = analyses.budget_result(study, ledger)
    return ReportContext(
        study=study,
        plan=plan,
        status=study_status(study, ledger),
        runs=runs,
        events=ledger.events(),
        chain_problems=ledger.verify_chain(),
        gates=views,
        budget_result=budget,
        budget_note=budget_note,
        published=published,
    )
