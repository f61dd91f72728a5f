"""Every table of the report, assembled in report order by `all_tables`.

The tables live by subject: `table_model` (the `Table` and its CSV/JSON writers),
`study_tables` (summary, matrix, plan, published), `gate_tables` (frozen rules, decisions,
each gate's analysis, cells, agreement, sensitivity), `confidence_tables` (verdict confidence
and variance per gate) and `run_tables` (budget, runs, failed runs). The names other modules
use are re-exported here.
"""

from __future__ import annotations

from stagewise.report.confidence_tables import (
    CONFIDENCE_COLUMNS,
    VARIANCE_COLUMNS,
    confidence_table_of,
    variance_table_of,
)
from stagewise.report.context import ReportContext
from stagewise.report.gate_tables import (
    GATE_COLUMNS,
    agreement_table,
    cells_table,
    decisions_table,
    freezes_table,
    gate_table,
    sensitivity_table,
)
from stagewise.report.run_tables import (
    RUN_COLUMNS,
    budget_tables,
    failed_runs_table,
    flagged_runs_table,
    runs_table,
)
from stagewise.report.study_tables import matrix_table, plan_table, published_table, summary_table
from stagewise.report.table_model import Table

__all__ = [
    "CONFIDENCE_COLUMNS",
    "GATE_COLUMNS",
    "RUN_COLUMNS",
    "VARIANCE_COLUMNS",
    "Table",
    "all_tables",
    "confidence_table_of",
    "runs_table",
    "variance_table_of",
]


def all_tables(ctx: ReportContext) -> list[Table]:
    """Every table in report order; tables without data are left out (the HTML says why)."""
    tables = [summary_table(ctx), matrix_table(ctx), plan_table(ctx), freezes_table(ctx)]
    tables.append(decisions_table(ctx))
    for view in ctx.gates:
        for maybe in (
            gate_table(view),
            confidence_table_of(view.gate, view.gate_result),
            variance_table_of(view.gate, view.gate_result),
            cells_table(ctx, view),
            sensitivity_table(view),
        ):
            if maybe is not None:
                tables.append(maybe)
    agreement = agreement_table(ctx)
    if agreement is not None:
        tables.append(agreement)
    tables.extend(budget_tables(ctx))
    tables.append(runs_table(ctx))
    tables.append(flagged_runs_table(ctx))
    tables.append(failed_runs_table(ctx))
    tables.extend(published_table(p, ctx) for p in ctx.published)
    return tables
