"""Gate commands: freeze, gate, sensitivity, budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stagewise.analysis.confidence import DEFAULT_CONFIDENCE
from stagewise.analysis.sensitivity import DEFAULT_GRID, parse_grid
from stagewise.budget_units import round_hours
from stagewise.cli.common import (
    SeedAlias,
    console,
    emit_json,
    fmt,
    fmt_count,
    open_study,
    print_flagged,
)
from stagewise.cli.gate_view import print_gate
from stagewise.errors import StagewiseError, StudyError
from stagewise.gates.budget import budget as compute_budget
from stagewise.gates.confidence import DEFAULT_SEED, check_confidence, check_seed
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import amendment_history
from stagewise.gates.freeze import freeze as freeze_gate
from stagewise.gates.seed_planning import SeedPlan, seed_plan
from stagewise.gates.sensitivity import sensitivity as compute_sensitivity
from stagewise.gates.throughput import short_budgets
from stagewise.ledger import Ledger
from stagewise.study.model import Study
from stagewise.words import small

StudyDir = Annotated[Path, typer.Argument(help="Study folder (holds study.toml and the ledger).")]
GateId = Annotated[str, typer.Argument(help="Gate id, as in [gates.<id>] of study.toml.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def _out() -> Console:
    """The shared console on a terminal; a wide one when piped, so tables stay readable."""
    return console if console.is_terminal else Console(highlight=False, width=160)


def freeze(
    folder: StudyDir,
    gate: GateId,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (required with --amend).")
    ] = None,
    amend: Annotated[
        bool, typer.Option("--amend", help="Record a changed gate as a reasoned amendment.")
    ] = False,
    json_: JsonFlag = False,
) -> None:
    """Freeze a gate and the plan of its stages (sha256, UTC time, chained to the ledger).

    Before freezing, when an earlier gate's cells say the planned cells are too few to decide a
    threshold rule at 90% confidence and power (`stagewise plan DIR --seeds-for GATE`), the
    advice is shown; it never blocks the freeze.
    """
    with open_study(folder, start=True) as (study, ledger):
        advice = _seed_advice(study, ledger, gate)
        if not json_ and advice is not None:
            _print_advice(advice, folder)
        short = short_budgets(study, ledger, gate)
        if not json_:
            for s in short:
                console.print(f"[yellow]warning[/] (never blocks the freeze): {s.text()}")
        outcome = freeze_gate(study, ledger, gate, reason=reason, amend=amend)
        if json_:
            emit_json(
                {
                    **outcome.to_dict(),
                    "history": [f.history_json() for f in amendment_history(ledger, gate)],
                    "seed_advice": advice.to_json() if advice is not None else None,
                    "short_budgets": [s.to_json() for s in short],
                }
            )
            return
        rec = outcome.record
        for warning in outcome.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        if not outcome.created:
            console.print(
                f"{gate} is already frozen as it stands ({rec.kind} at {rec.frozen_at}, "
                f"sha256 {rec.sha256}); nothing recorded"
            )
            return
        word = "amended" if rec.kind == "amend" else "froze"
        console.print(f"{word} {gate}: sha256 {rec.sha256} at {rec.frozen_at}")
        recipes = outcome.to_dict()["recipes"]
        if isinstance(recipes, dict):
            console.print(f"recipes frozen: {len(recipes)} conditions ({', '.join(recipes)})")
        if rec.post_hoc:
            console.print(
                f"[yellow]post hoc:[/] {len(rec.results_at_freeze)} results of its stages "
                "already existed; they are recorded with the freeze"
            )


def _seed_advice(study: Study, ledger: Ledger, gate: str) -> SeedPlan | None:
    """The seed plan of `gate` when its planned cells fall short of it, else None."""
    if gate not in study.gates:
        return None  # freeze_gate names the unknown gate
    try:
        plan = seed_plan(study, ledger, gate)
    except StagewiseError:
        return None  # no earlier cells to plan from: nothing to advise
    return plan if plan.short else None


def _print_advice(plan: SeedPlan, folder: Path) -> None:
    console = _out()
    console.print(
        f"[yellow]advice[/] (never blocks the freeze): the plan of {plan.gate}'s stages has "
        f"{plan.planned_hosts} hosts x {plan.planned_seeds_per_host} seeds per host; at "
        f"confidence {plan.confidence:g} and power {plan.power:g}, with the variance observed at "
        f"{plan.from_gate}:"
    )
    for r in plan.short:
        if r.achievable:
            need = f"{r.seeds_per_host} seeds per host x {r.hosts} hosts"
        else:
            need = "no seed count with these hosts" + (
                f" (at least {r.hosts} hosts)" if r.hosts is not None else ""
            )
        console.print(f"  {r.condition_id} {r.description}: {need}", markup=False)
    console.print(f"  details: stagewise plan {folder} --seeds-for {plan.gate}", markup=False)


def gate(
    folder: StudyDir,
    gate: GateId,
    json_: JsonFlag = False,
    confidence: Annotated[
        float,
        typer.Option(
            "--confidence",
            help="Level of the verdict-confidence intervals; decisive = p_verdict >= it.",
        ),
    ] = DEFAULT_CONFIDENCE,
    seed: Annotated[
        int,
        typer.Option(
            "--bootstrap-seed", help="Seed of the blocked bootstrap (same seed, same numbers)."
        ),
    ] = DEFAULT_SEED,
    seed_alias: SeedAlias = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Compute and print the outcome; record nothing, write no file."
        ),
    ] = False,
) -> None:
    """Apply a frozen gate: verdicts, decision in the ledger, records in decisions/.

    The decision is recorded once per change of outcome: applying the gate again with no new
    results appends nothing to the ledger.
    """
    seed = seed if seed_alias is None else seed_alias
    check_confidence(confidence)
    check_seed(seed, "--bootstrap-seed" if seed_alias is None else "--seed")
    with open_study(folder) as (study, ledger):
        ledger.require_intact()
        applied = apply_gate(study, ledger, gate, confidence=confidence, seed=seed, dry_run=dry_run)
        obj = applied.object
        if json_:
            emit_json(obj)
            return
        print_gate(_out(), applied.result)
        print_flagged(obj["flagged_runs"], obj["min_steps"])
        if dry_run:
            console.print("dry run: nothing recorded, no file written")
        elif not applied.recorded:
            console.print(
                "decision unchanged since it was recorded"
                + (f" at {applied.decision.decided_at}" if applied.decision else "")
                + ": nothing appended to the ledger"
            )
        if applied.files:
            console.print(f"records: {', '.join(str(p) for p in applied.files)}", soft_wrap=True)
        console.print(f"chain head: {ledger.head}", soft_wrap=True)


def sensitivity(
    folder: StudyDir,
    gate: GateId,
    grid: Annotated[
        str | None,
        typer.Option("--grid", help="Comma-separated thresholds (default 0.005..0.030 by 0.005)."),
    ] = None,
    json_: JsonFlag = False,
) -> None:
    """Re-evaluate every threshold rule of a gate over a grid of thresholds."""
    try:
        values = parse_grid(grid) if grid is not None else DEFAULT_GRID
    except ValueError as exc:
        raise StudyError(f"--grid: {exc}") from None
    with open_study(folder) as (study, ledger):
        if gate not in study.gates:
            raise StudyError(f"unknown gate {gate!r}; gates: {', '.join(study.gates)}")
        ledger.require_intact()
        grid_result = compute_sensitivity(study, ledger, gate, values)
    if json_:
        emit_json(grid_result.to_json())
        return
    console = _out()
    grid_text = " ".join(f"{t:.3f}" for t in grid_result.grid)
    table = Table(title=f"{gate}: threshold sensitivity (grid {grid_text}; + pass, x fail)")
    for col in ("condition", "statistic", "observed", "declared", "grid", "note"):
        table.add_column(col)
    for r in grid_result.rows:
        marks = "".join(
            "+" if v == "pass" else "x" if v == "fail" else "?" for v in r.sweep.verdicts
        )
        declared = f"<= {r.declared_threshold:g}: {r.verdict_at_declared_threshold}"
        role = "declared" if r.declared else "diagnostic"
        if not r.declared:
            declared += " (diagnostic only)"
        table.add_row(
            r.label,
            f"{r.statistic.replace('_to_reference', '')} ({role})",
            fmt(r.observed),
            declared,
            marks,
            r.sweep.note(),
        )
    console.print(table)


def budget(folder: StudyDir, json_: JsonFlag = False) -> None:
    """Budgeted and recorded GPU-hours per stage, totals and promotion counterfactuals."""
    with open_study(folder) as (study, ledger):
        result = compute_budget(study, ledger)
    if json_:
        emit_json(result.to_json())
        return
    console = _out()
    unit = result.hours_unit
    table = Table(title=f"{result.study}: {unit}")
    cols: tuple[str, ...] = (
        "stage",
        "candidates",
        "seeds",
        "hosts",
        "budget h",
        "budgeted",
        "recorded",
    )
    cols += ("training", "evaluation", "start-up", "wall")
    for col in cols:
        table.add_column(col, justify="left" if col == "stage" else "right")
    # Hours as `budget --json` writes them (rounded), so the two never disagree.
    h = round_hours
    for s, split in zip(result.stages, result.splits, strict=True):
        table.add_row(
            s.stage,
            fmt_count(s.candidates),
            str(s.seeds),
            str(s.hosts),
            f"{s.budget_hours:g}",
            small(h(s.budgeted_gpu_hours), 1),
            small(h(s.recorded_gpu_hours)),
            *(small(h(v)) for v in (split.training_hours, split.eval_hours, split.startup_hours)),
            small(h(split.wall_hours)),
        )
    table.add_row(
        "total",
        "",
        "",
        "",
        "",
        small(h(result.total_budgeted_gpu_hours), 1),
        small(h(result.total_recorded_gpu_hours)),
    )
    console.print(table)
    console.print(
        f"recorded = training hours of succeeded runs; evaluation, start-up and wall are where "
        f"the rest of their time went ({unit})",
        markup=False,
    )
    cf = Table(title=f"counterfactuals through the final gate ({result.final_gate})")
    for col in ("scenario", unit, "added vs executed"):
        cf.add_column(col, justify="left" if col == "scenario" else "right")
    for c in result.counterfactuals:
        cf.add_row(
            c.scenario, small(h(c.confirmation_gpu_hours), 1), small(h(c.added_vs_executed), 1)
        )
    console.print(cf)


def register(app: typer.Typer) -> None:
    app.command("freeze")(freeze)
    app.command("gate")(gate)
    app.command("sensitivity")(sensitivity)
    app.command("budget")(budget)
