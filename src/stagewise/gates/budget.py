"""The budget of a study: per-stage GPU-hours, totals and promotion counterfactuals."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stagewise.analysis.budget import (
    Counterfactual,
    StageBudget,
    counterfactual,
    stage_budget,
    total,
)
from stagewise.analysis.run_checks import summary_of, time_split
from stagewise.budget_units import round_hours
from stagewise.json_types import JsonObject
from stagewise.ledger import Ledger, RunRecord
from stagewise.plan import Plan, build_plan
from stagewise.study.model import Gate, Study


def final_gate(study: Study) -> Gate | None:
    """The last confirm gate of the study (the last gate when none confirms)."""
    gates = list(study.gates.values())
    confirms = [g for g in gates if g.kind == "confirm"]
    if confirms:
        return confirms[-1]
    return gates[-1] if gates else None


def counterfactual_json(cf: Counterfactual) -> JsonObject:
    return {
        "gate": cf.gate,
        "scenario": cf.scenario,
        "candidates": cf.candidates,
        "through_stages": list(cf.through_stages),
        "confirmation_gpu_hours": round_hours(cf.confirmation_gpu_hours),
        "added_vs_executed": round_hours(cf.added_vs_executed),
    }


@dataclass(frozen=True)
class RecordedSplit:
    """Where a stage's recorded hours went (succeeded runs): training, evaluation, start-up
    and the runs' whole wall time; None where no run of the stage reported that part."""

    training_hours: float | None
    eval_hours: float | None
    startup_hours: float | None
    wall_hours: float | None

    def to_json(self) -> dict[str, float | None]:
        return {
            "training_hours": round_hours(self.training_hours),
            "eval_hours": round_hours(self.eval_hours),
            "startup_hours": round_hours(self.startup_hours),
            "wall_hours": round_hours(self.wall_hours),
        }


def recorded_split(runs: Sequence[Any], stage: str) -> RecordedSplit:
    splits = [time_split(r) for r in runs if r.stage == stage and r.status == "succeeded"]

    def hours(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return math.fsum(known) / 3600.0 if known else None

    return RecordedSplit(
        hours([t.training for t in splits]),
        hours([t.evaluation for t in splits]),
        hours([t.startup for t in splits]),
        hours([t.total for t in splits]),
    )


def hours_unit(study: Study, runs: Sequence[Any]) -> str:
    """ "CPU-hours" when the study's runs ran on CPU (as their summaries say, else as its
    hosts and runner say), "GPU-hours" otherwise (and for hosts the tool does not drive)."""
    kinds = set()
    for r in runs:
        if r.status != "succeeded":
            continue
        device = summary_of(r).get("device")
        if isinstance(device, dict) and isinstance(device.get("kind"), str):
            kinds.add(device["kind"])
    if kinds:
        return "CPU-hours" if kinds == {"cpu"} else "GPU-hours"
    hosts = list(study.hosts.values())
    # An external host's devices are not known here: it counts as a GPU.
    on_cpu = bool(hosts) and all(
        h.executor != "external" and set(h.devices) == {"cpu"} for h in hosts
    )
    return "CPU-hours" if on_cpu else "GPU-hours"


def stage_json(sb: StageBudget) -> JsonObject:
    return {
        "stage": sb.stage,
        "candidates": sb.candidates,
        "seeds": sb.seeds,
        "hosts": sb.hosts,
        "budget_seconds": sb.budget_seconds,
        "budget_hours": sb.budget_hours,
        "budgeted_gpu_hours": round_hours(sb.budgeted_gpu_hours),
        "recorded_gpu_hours": round_hours(sb.recorded_gpu_hours),
        "runs_recorded": sb.runs_recorded,
    }


@dataclass(frozen=True)
class BudgetResult:
    """The object of `stagewise budget --json`, typed. Hours are unrounded here; `to_json`
    rounds them to nine decimals."""

    study: str
    stages: tuple[StageBudget, ...]
    total_budgeted_gpu_hours: float | None
    total_recorded_gpu_hours: float | None
    final_gate: str | None
    counterfactuals: tuple[Counterfactual, ...]  # the executed branch first
    # Added later (keys after the contract's): the unit the hours are in, and per stage where
    # the recorded hours went.
    hours_unit: str = "GPU-hours"
    splits: tuple[RecordedSplit, ...] = ()

    @property
    def executed(self) -> Counterfactual | None:
        return next((c for c in self.counterfactuals if c.gate is None), None)

    def to_json(self) -> JsonObject:
        return {
            "study": self.study,
            "stages": [stage_json(s) for s in self.stages],
            "total_budgeted_gpu_hours": round_hours(self.total_budgeted_gpu_hours),
            "total_recorded_gpu_hours": round_hours(self.total_recorded_gpu_hours),
            "final_gate": self.final_gate,
            "counterfactuals": [counterfactual_json(cf) for cf in self.counterfactuals],
            "hours_unit": self.hours_unit,
            "recorded_split": [
                {"stage": st.stage, **sp.to_json()}
                for st, sp in zip(self.stages, self.splits, strict=True)
            ],
        }


def budget(study: Study, ledger: Ledger) -> BudgetResult:
    """Budgeted and recorded GPU-hours per stage, totals and promotion counterfactuals."""
    return budget_of(build_plan(study, ledger), ledger.runs())


def budget_of(plan: Plan, runs: Sequence[RunRecord]) -> BudgetResult:
    """The budget of a plan and the runs recorded so far (pure)."""
    study = plan.study
    stages = {
        sp.stage.stage_id: stage_budget(
            sp.stage.stage_id,
            sp.candidate_count if sp.known else None,
            len(sp.stage.seeds),
            len(sp.stage.hosts),
            sp.stage.budget_seconds,
            runs,
        )
        for sp in plan.stages
    }
    budgeted = total([s.budgeted_gpu_hours for s in stages.values()])
    recorded_values = [s.recorded_gpu_hours for s in stages.values() if s.recorded_gpu_hours]
    final = final_gate(study)
    counterfactuals: list[Counterfactual] = []
    if final is not None:
        final_stages = [stages[sid] for sid in final.stages]
        executed = total([s.budgeted_gpu_hours for s in final_stages])
        executed_n = plan.gate_candidates(final)
        counterfactuals.append(
            counterfactual(
                None,
                (
                    f"executed: {len(executed_n)} candidates"
                    if executed_n is not None
                    else "executed: candidates not decided yet"
                )
                + f" through {', '.join(final.stages)} (gate {final.gate_id})",
                len(executed_n) if executed_n is not None else None,
                final_stages,
                executed,
            )
        )
        gates = list(study.gates.values())
        upstream = gates[: gates.index(final)]
        for gate in reversed(upstream):
            if gate.kind != "promote":
                continue
            cands = plan.gate_candidates(gate)
            n = len(cands) if cands is not None else None
            counterfactuals.append(
                counterfactual(
                    gate.gate_id,
                    f"continue all {n if n is not None else 'the'} candidates of {gate.gate_id} "
                    f"({'+'.join(gate.stages)}) through {', '.join(final.stages)}",
                    n,
                    final_stages,
                    executed,
                )
            )
    return BudgetResult(
        study=study.name,
        stages=tuple(stages.values()),
        total_budgeted_gpu_hours=budgeted,
        # A plain sum, as the JSON contract has always printed it (fsum can differ in the 9th decimal).
        total_recorded_gpu_hours=sum(v for v in recorded_values if v is not None)
        if recorded_values
        else None,
        final_gate=final.gate_id if final else None,
        counterfactuals=tuple(counterfactuals),
        hours_unit=hours_unit(study, runs),
        splits=tuple(recorded_split(runs, sid) for sid in stages),
    )
