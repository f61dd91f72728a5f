"""The tables of the runs: the GPU-hour budget per stage, every run, and the failed ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stagewise.ledger.schema import SUMMARY_FIELDS
from stagewise.report.context import ReportContext
from stagewise.report.table_model import RUNS_SOURCE, STUDY_SOURCES, Table

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
    budget = ctx.budget
    if not budget:
        return []
    sources = [*STUDY_SOURCES, RUNS_SOURCE, "decisions/decisions.json"]
    stages = Table(
        "budget",
        "Budget: budgeted and recorded GPU-hours per stage",
        list(BUDGET_COLUMNS),
        [{c: r.get(c) for c in BUDGET_COLUMNS} for r in budget.get("stages", [])],
        note=f"total budgeted GPU-hours: {budget.get('total_budgeted_gpu_hours')}; total "
        f"recorded: {budget.get('total_recorded_gpu_hours')} (sum of training time of recorded "
        "runs; none where the results carry no training time)",
        sources=sources,
        command="stagewise budget STUDY --json",
    )
    counter = Table(
        "budget_counterfactuals",
        "Budget counterfactuals: continue all candidates of a gate to the final confirmation",
        list(COUNTERFACTUAL_COLUMNS),
        [{c: r.get(c) for c in COUNTERFACTUAL_COLUMNS} for r in budget.get("counterfactuals", [])],
        note=f"final gate: {budget.get('final_gate')}; GPU-hours of its stages in each scenario",
        sources=sources,
        command="stagewise budget STUDY --json",
    )
    return [stages, counter] if counter.rows else [stages]


def run_row(rec: Any) -> dict[str, Any]:
    row = {c: getattr(rec, c) for c in RUN_COLUMNS}
    return row


def runs_table(ctx: ReportContext) -> Table:
    return Table(
        "runs",
        "Runs",
        list(RUN_COLUMNS),
        [run_row(r) for r in ctx.runs],
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
