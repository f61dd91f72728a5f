"""The tables of the runs: the GPU-hour budget per stage, every run, and the failed ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stagewise.analysis.budget import Counterfactual
from stagewise.analysis.published import as_float, published_hours
from stagewise.analysis.run_checks import check_run, check_runs, flagged, time_split
from stagewise.budget_units import round_hours
from stagewise.gates.budget import BudgetResult, counterfactual_json, stage_json
from stagewise.ledger import RunRecord
from stagewise.ledger.schema import SUMMARY_FIELDS
from stagewise.report.context import ReportContext
from stagewise.report.table_model import RUNS_SOURCE, STUDY_SOURCES, Row, Table, pick
from stagewise.study.model import Study
from stagewise.words import small

TIMING_COLUMNS = ("startup_seconds", "eval_seconds")
# Run columns that carry no path, no user and no machine name; the others stay in the ledger.
RUN_COLUMNS = (
    "stage",
    "condition_id",
    "seed",
    "host",
    "status",
    "cause",
    "attempts",
    "source",
    "created_at",
    "started_at",
    "finished_at",
    *SUMMARY_FIELDS,
    "checkpoint_sha256",
    "recipe_sha256",  # the resolved recipe the run trained (its text: recipes/ in a bundle)
    # Where a run's time went besides training (from its summary; analysis.run_checks), and
    # the sanity flags that follow: in the bundle too, so verify re-derives them.
    *TIMING_COLUMNS,
    "flags",
)
BUDGET_COLUMNS = (
    "stage",
    "candidates",
    "seeds",
    "hosts",
    "budget_hours",
    "budgeted_gpu_hours",
    "recorded_gpu_hours",
    "runs_recorded",
    # Where the recorded runs' time went (gates.budget.RecordedSplit), in the same unit.
    "training_hours",
    "eval_hours",
    "startup_hours",
    "wall_hours",
)
COUNTERFACTUAL_COLUMNS = (
    "scenario",
    "gate",
    "candidates",
    "through_stages",
    "confirmation_gpu_hours",
    "added_vs_executed",
)


def budget_tables(ctx: ReportContext) -> list[Table]:
    budget = ctx.budget_result
    if budget is None:
        return []
    sources = [*STUDY_SOURCES, RUNS_SOURCE, "decisions/decisions.json"]
    unit = budget.hours_unit
    # The rows are the `budget --json` objects (hours rounded as written there), by column.
    stages = Table(
        "budget",
        f"Budget: budgeted and recorded {unit} per stage",
        list(BUDGET_COLUMNS),
        [
            pick({**stage_json(st), **split.to_json()}, BUDGET_COLUMNS)
            for st, split in zip(budget.stages, budget.splits, strict=True)
        ],
        note=budget_note(ctx, budget),
        sources=sources,
        command="stagewise budget STUDY --json",
    )
    caveat = (
        "accounting for continuations that were never run, not evidence that the candidates "
        "left out would have lost"
    )
    matched = _published_match(ctx, budget.counterfactuals)
    counter = Table(
        "budget_counterfactuals",
        "Budget counterfactuals: continue all candidates of a gate to the final confirmation",
        list(COUNTERFACTUAL_COLUMNS),
        [pick(counterfactual_json(cf), COUNTERFACTUAL_COLUMNS) for cf in budget.counterfactuals],
        note=f"final gate: {budget.final_gate}; {unit} of its stages in each scenario; "
        + caveat
        + (f"; {matched}" if matched else ""),
        sources=sources,
        command="stagewise budget STUDY --json",
    )
    return [stages, counter] if counter.rows else [stages]


def budget_note(ctx: ReportContext, budget: BudgetResult) -> str:
    """Budgeted and recorded totals in words (no raw None): what was recorded, or why not."""
    budgeted = round_hours(budget.total_budgeted_gpu_hours)
    recorded = round_hours(budget.total_recorded_gpu_hours)
    unit = budget.hours_unit
    text = f"total budgeted {unit}: {_hours(budgeted)} (candidates x seeds x hosts x budget); "
    if recorded:
        text += (
            f"total recorded: {_hours(recorded)} (sum of training time of recorded runs; "
            "training, evaluation, start-up and wall hours say where their time went)"
        )
    else:
        text += "no run in this study recorded its training time (imported or pending)"
    for stated in published_hours(ctx.published):
        text += (
            f"; recorded hours as published ({stated.scope}): {stated.hours:g}"
            + (f", printed {stated.printed}" if stated.printed else "")
            + (f" ({stated.note})" if stated.note else "")
        )
    return text


def _published_match(ctx: ReportContext, rows: Sequence[Counterfactual]) -> str:
    """Which counterfactual rows a published budget table prints, and which it does not."""
    pub = next((p for p in ctx.published if p.kind == "budget"), None)
    if pub is None:
        return ""
    printed = {as_float(r.get("confirmation_gpu_hours")) for r in pub.rows}
    ours = [
        (r.gate, hours, r)
        for r in rows
        if r.gate and (hours := round_hours(r.confirmation_gpu_hours)) is not None
    ]
    same = [(gate, hours) for gate, hours, _ in ours if hours in printed]
    other = [(gate, hours, r) for gate, hours, r in ours if hours not in printed]
    parts = []
    if same:
        parts.append(
            "the published budget table prints the "
            + ", ".join(f"{gate} row ({hours:g})" for gate, hours in same)
        )
    if other:
        parts.append(
            "it does not print the "
            + ", ".join(
                f"{gate} row ({hours:g}, +{round_hours(r.added_vs_executed) or 0:g})"
                for gate, hours, r in other
            )
        )
    return "; ".join(parts)


def _hours(value: object) -> str:
    if not isinstance(value, int | float):
        return "not known yet (a stage's candidates wait for a gate)"
    return small(value, 4) if value < 1 else f"{value:g}"


def run_row(rec: RunRecord, study: Study | None = None) -> Row:
    """One run as the report and the bundle show it (`study`: for its flags)."""
    row = {c: getattr(rec, c) for c in RUN_COLUMNS if c not in TIMING_COLUMNS and c != "flags"}
    split = time_split(rec)
    row["startup_seconds"], row["eval_seconds"] = split.startup, split.evaluation
    flags: tuple[str, ...] = ()
    if study is not None and rec.status == "succeeded" and rec.stage in study.stages:
        flags = check_run(rec, study.stages[rec.stage].budget_seconds, study.min_steps).flags
    row["flags"] = " ".join(flags)
    return row


FLAGGED_COLUMNS = (
    "stage",
    "condition_id",
    "seed",
    "host",
    "flags",
    "num_steps",
    "budget_seconds",
    "training_seconds",
    "eval_seconds",
    "notes",
)


def flagged_runs_table(ctx: ReportContext) -> Table:
    """Succeeded runs whose numbers cannot mean much (too_short, over_budget, slow_eval)."""
    budgets = {sid: st.budget_seconds for sid, st in ctx.study.stages.items()}
    checks = flagged(check_runs(ctx.runs, budgets, ctx.study.min_steps))
    rows = [
        {
            "stage": c.stage,
            "condition_id": c.condition_id,
            "seed": c.seed,
            "host": c.host,
            "flags": " ".join(c.flags),
            "num_steps": c.num_steps,
            "budget_seconds": c.budget_seconds,
            "training_seconds": c.split.training,
            "eval_seconds": c.split.evaluation,
            "notes": "; ".join(c.notes),
        }
        for c in checks
    ]
    return Table(
        "flagged_runs",
        "Flagged runs: ranked like the others, but read their numbers with care",
        list(FLAGGED_COLUMNS),
        rows,
        note=f"too_short: fewer optimizer steps than [runner] min_steps = "
        f"{ctx.study.min_steps}; over_budget: training more than 10% over the stage's budget; "
        "slow_eval: evaluation longer than training",
        sources=[RUNS_SOURCE, *STUDY_SOURCES],
    )


def runs_table(ctx: ReportContext) -> Table:
    return Table(
        "runs",
        "Runs",
        list(RUN_COLUMNS),
        [run_row(r, ctx.study) for r in ctx.runs],
        note="paths, owners, logs and raw summaries stay in the ledger",
        sources=[RUNS_SOURCE],
    )


def failed_runs_table(ctx: ReportContext) -> Table:
    return failed_runs_table_of(ctx.runs)


def failed_runs_table_of(runs: Sequence[Any]) -> Table:
    rows = [
        {
            "stage": r.stage,
            "condition_id": r.condition_id,
            "seed": r.seed,
            "host": r.host,
            "status": r.status,
            "attempts": r.attempts,
            "cause": r.cause or "",
        }
        for r in runs
        if r.status in ("failed", "interrupted")
    ]
    return Table(
        "failed_runs",
        "Failed and interrupted runs with causes",
        ["stage", "condition_id", "seed", "host", "status", "attempts", "cause"],
        rows,
        sources=[RUNS_SOURCE],
    )
