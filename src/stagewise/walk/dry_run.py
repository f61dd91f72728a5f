"""A walk's dry run: every step it would take from where the ledger stands, changing nothing."""

from __future__ import annotations

from typing import Any

from stagewise.executors.stage import run_stage
from stagewise.ledger import Ledger
from stagewise.plan import build_plan
from stagewise.study.model import Study
from stagewise.walk.record import StudyWalk
from stagewise.walk.steps import freeze_reason, stage_complete, unfrozen


def dry_run_walk(
    study: Study,
    ledger: Ledger,
    walk: StudyWalk,
    *,
    freeze: bool,
    through: str | None,
) -> StudyWalk:
    """Every step the walk would take from here, changing nothing."""
    walk.outcome = "dry_run"
    plan = build_plan(study, ledger)
    will_freeze: set[str] = set()
    decided = {g for g in study.gates if ledger.active_decision(g) is not None}
    complete = {sid for sid in study.stages if stage_complete(ledger, plan.stage(sid))}
    for stage_id in study.stages:
        sp = plan.stage(stage_id)
        for gate in study.gates_of_stage(stage_id):
            if gate.gate_id in will_freeze or stage_id in complete:
                continue
            problem = unfrozen(study, ledger, gate)
            if problem is None:
                action, note = "frozen", "already frozen"
            elif ledger.current_freeze(gate.gate_id) is None and freeze:
                action, note = "freeze", freeze_reason(stage_id)
                will_freeze.add(gate.gate_id)
            else:
                action, note = "refuse", problem
            walk.plan.append({"step": "gate", "gate": gate.gate_id, "action": action, "note": note})
        row: dict[str, Any] = {
            "step": "stage",
            "stage": stage_id,
            "budget": budget_text(study, stage_id),
            "seeds": list(sp.stage.seeds),
            "hosts": list(sp.stage.hosts),
        }
        if sp.candidates is None:
            count = sp.candidate_count
            row.update(
                action="after gate",
                candidates=None,
                note=(
                    f"candidates promoted by {sp.stage.candidates.gate}"
                    + (
                        f" ({'at most ' if sp.count_is_upper_bound else ''}{count})"
                        if count
                        else ""
                    )
                ),
                runs=None if count is None else count * len(sp.stage.seeds) * len(sp.stage.hosts),
            )
        else:
            state = run_stage(study, ledger, stage_id, dry_run=True, allow_unfrozen=True)
            counts: dict[str, int] = {}
            for r in state.dry_run:
                counts[r["action"]] = counts.get(r["action"], 0) + 1
            row.update(
                action="complete" if stage_id in complete else "run",
                candidates=list(sp.candidates),
                runs=len(sp.runs),
                counts=counts,
                to_run=[r["run"] for r in state.dry_run if r["action"] == "run"],
                argv=[r["argv"] for r in state.dry_run if r["action"] == "run"],
            )
        walk.plan.append(row)
        for gate in study.gates.values():
            if stage_id != [s for s in study.stages if s in gate.stages][-1]:
                continue  # a gate is applied after the last stage it pools
            if gate.gate_id in decided:
                action = "decided"
            else:
                action = "manual" if gate.decide == "manual" else "apply"
            walk.plan.append({"step": "decide", "gate": gate.gate_id, "action": action})
        if stage_id == through:
            break
    return walk


def budget_text(study: Study, stage_id: str) -> str:
    from stagewise.budget_units import format_duration

    return format_duration(study.stages[stage_id].budget_seconds)


def dry_run_lines(walk: StudyWalk) -> list[str]:
    """The dry run as a user reads it, one step a line."""
    lines = []
    for step in walk.plan:
        if step["step"] == "gate":
            verb = {"frozen": "is frozen", "freeze": "would be frozen", "refuse": "blocks"}[
                step["action"]
            ]
            lines.append(f"gate {step['gate']} {verb}: {step['note']}")
        elif step["step"] == "stage":
            head = f"stage {step['stage']} ({step['budget']}, seeds {step['seeds']}, hosts {', '.join(step['hosts'])})"
            if step["candidates"] is None:
                runs = "?" if step["runs"] is None else step["runs"]
                lines.append(f"{head}: {step['note']}; {runs} runs")
                continue
            counts = ", ".join(f"{n} {a}" for a, n in sorted(step["counts"].items()))
            lines.append(f"{head}: {step['runs']} runs ({counts})")
            for run, argv in zip(step["to_run"], step["argv"], strict=True):
                lines.append(f"    {run}: {' '.join(argv)}")
        else:
            verb = {
                "decided": "is decided already",
                "manual": "waits for `stagewise decide` (manual)",
                "apply": "would be applied",
            }[step["action"]]
            lines.append(f"gate {step['gate']} {verb}")
    return lines
