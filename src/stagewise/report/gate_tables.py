"""The gates' tables: frozen rules, decisions, analysis, host-seed cells, agreement, sensitivity."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from stagewise.analysis.published import outside_freezes
from stagewise.analysis.thresholds import threshold_text
from stagewise.gates.results import CONDITION_KEYS, GateResult, finite
from stagewise.gates.sensitivity import SensitivityRow
from stagewise.ledger import RunRecord
from stagewise.report.context import GateView, ReportContext
from stagewise.report.table_model import RUNS_SOURCE, STUDY_SOURCES, Row, Table, flatten, pick
from stagewise.study.model import Gate, Study

GATE_COLUMNS = CONDITION_KEYS  # the gate table is the gate JSON's condition rows


def freezes_table(ctx: ReportContext) -> Table:
    outside = outside_freezes(ctx.published)
    rows = []
    for view in ctx.gates:
        for rec in view.freezes:
            rows.append(
                {
                    "gate": rec.gate,
                    "record": rec.kind,
                    "sha256": rec.sha256,
                    "frozen_at": rec.frozen_at,
                    "post_hoc": rec.post_hoc,
                    "results_at_freeze": len(rec.results_at_freeze),
                    "reason": rec.reason or "",
                    "current": rec is view.freezes[-1],
                    # A freeze of a gate the study says was written down outside the tool is
                    # a replay's: its date is the replay's, the rule's own date stands beside it.
                    "replay": rec.gate in outside,
                    "written_outside_on": outside[rec.gate].written_on
                    if rec.gate in outside
                    else "",
                }
            )
    columns = ["gate", "record", "sha256", "frozen_at", "post_hoc", "results_at_freeze"]
    return Table(
        "freezes",
        "Frozen rules and amendments",
        [*columns, "reason", "current", "replay", "written_outside_on"],
        rows,
        note="sha256 of the canonical JSON of the gate and its stages' plan (frozen/<gate>.json)"
        + (
            "; replay = the gate was written down outside the tool on written_outside_on "
            "(published/gate_records.csv) and this freeze re-froze it for the replay"
            if outside
            else ""
        ),
        sources=["frozen/"],
        command="stagewise freeze STUDY GATE",
    )


def decisions_table(ctx: ReportContext) -> Table:
    columns = (
        "gate",
        "kind",
        "manual",
        "promoted",
        "reason",
        "source",
        "frozen_sha256",
        "decided_at",
        "active",
        "withdraw_reason",
    )
    rows = []
    for view in ctx.gates:
        for rec in view.decisions:
            record = rec.as_dict()
            rows.append({c: "" if record[c] is None else record[c] for c in columns})
    return Table(
        "decisions",
        "Decisions with reasons",
        list(columns),
        rows,
        note="manual = taken outside the tool (a researcher's judgement or a published outcome)",
        sources=["decisions/decisions.json"],
        command="stagewise gate STUDY GATE / stagewise decide STUDY GATE",
    )


def gate_table(view: GateView) -> Table | None:
    return gate_table_of(view.gate, view.gate_result)


def gate_table_of(gate: Gate, gate_result: GateResult | None) -> Table | None:
    """The analysis table of one gate: the condition rows of its `stagewise gate --json`."""
    if gate_result is None:
        return None
    rows = []
    for cond in gate_result.conditions:
        row: dict[str, object] = {
            c: cond.shown(c) for c in GATE_COLUMNS if c not in ("verdict", "reasons")
        }
        row["verdict"] = cond.verdict.value
        row["reasons"] = list(cond.verdict.texts)
        rows.append(row)
    note = (
        f"{len(gate_result.cells)} host-seed cells; promoted: "
        f"{', '.join(gate_result.promoted) or 'none'}"
    )
    if gate_result.incomplete:
        note += "; incomplete: " + ", ".join(
            f"{m.condition_id} (missing {flatten([c.to_dict() for c in m.missing])})"
            for m in gate_result.incomplete
        )
    return Table(
        f"gate_{gate.gate_id}",
        f"Gate {gate.gate_id}: analysis of {' + '.join(gate.stages)} (recomputed from cells)",
        list(GATE_COLUMNS),
        rows,
        note=note,
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise gate STUDY {gate.gate_id} --json",
    )


def cells_table(ctx: ReportContext, view: GateView) -> Table | None:
    return cells_table_of(ctx.study, view.gate, view.cells)


def cells_table_of(study: Study, gate: Gate, cells: Sequence[RunRecord]) -> Table | None:
    if not cells:
        return None
    labels = {c.condition_id: c.label for c in study.conditions}
    rows = [
        {
            "stage": c.stage,
            "condition_id": c.condition_id,
            "seed": c.seed,
            "host": c.host,
            "val_bpb": c.val_bpb,
            "label": labels.get(c.condition_id, c.condition_id),
        }
        for c in cells
    ]
    return Table(
        f"cells_{gate.gate_id}",
        f"Gate {gate.gate_id}: host-seed cell values",
        ["stage", "host", "seed", "condition_id", "label", "val_bpb"],
        rows,
        sources=[RUNS_SOURCE],
    )


def agreement_rows(gate_id: str, gate_result: GateResult) -> list[Row]:
    """Kendall's W, host-pair tau/rho and leave-one-cell-out stability of one gate."""
    rows: list[Row] = [
        {
            "gate": gate_id,
            "measure": "Kendall's W over cells",
            "between": "all cells",
            "value": finite(gate_result.kendalls_w),
        }
    ]
    for pair in gate_result.host_pairs:
        between = f"{pair.host_a} vs {pair.host_b} (mean ranks)"
        rows.append(
            {
                "gate": gate_id,
                "measure": "Kendall tau",
                "between": between,
                "value": pair.kendall_tau,
            }
        )
        rows.append(
            {
                "gate": gate_id,
                "measure": "Spearman rho",
                "between": between,
                "value": pair.spearman_rho,
            }
        )
    left_out = len(gate_result.stability)
    if left_out:
        unchanged = left_out - gate_result.stability_changed
        rows.append(
            {
                "gate": gate_id,
                "measure": "leave-one-cell-out: promoted set unchanged (fraction)",
                "between": f"{unchanged} of {left_out} cells left out",
                "value": unchanged / left_out,
            }
        )
    return rows


def agreement_table(ctx: ReportContext) -> Table | None:
    rows = []
    for view in ctx.gates:
        if view.gate_result is not None:
            rows.extend(agreement_rows(view.gate_id, view.gate_result))
    if not rows:
        return None
    return Table(
        "agreement",
        "Rank agreement and leave-one-cell-out stability",
        ["gate", "measure", "between", "value"],
        rows,
        note="Kendall's W over cells; Kendall tau / Spearman rho between hosts' mean rankings; "
        "null where a statistic does not exist (fewer than two conditions or hosts)",
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command="stagewise gate STUDY GATE --json",
    )


SENSITIVITY_COLUMNS = (
    "label",
    "condition_id",
    "rule_description",
    "statistic",
    "role",
    "observed",
    "declared_threshold",
    "declared_verdict",
    "smallest_passing_threshold",
    "flip_threshold",
    "note",
)


DIAGNOSTIC_WORDS = {"pass": "within", "fail": "over"}  # the statistic against t; no verdict


def _step(grid: Sequence[float]) -> float | None:
    steps = {round(b - a, 9) for a, b in pairwise(grid)}
    return steps.pop() if len(steps) == 1 else None


def _diagnostic_note(row: SensitivityRow, grid: Sequence[float]) -> str:
    observed = row.observed
    if observed is None:
        return "diagnostic: no value"
    first = row.sweep.smallest_passing
    if first is not None:
        return f"diagnostic: {observed:.6f} is within every grid value from {threshold_text(first)}"
    last = f" through {threshold_text(grid[-1])}" if grid else ""
    return f"diagnostic: {observed:.6f} is over every grid value{last}"


def sensitivity_table(view: GateView) -> Table | None:
    typed = view.sensitivity_grid
    if typed is None or not typed.rows:
        return None
    grid = [float(g) for g in typed.grid]
    grid_cols = [f"at {threshold_text(g)}" for g in grid]
    rows: list[Row] = []
    for typed_row in typed.rows:
        # The columns as `sensitivity --json` writes them (the contract), typed before.
        row = pick(typed_row.to_json(), SENSITIVITY_COLUMNS)
        for col, verdict in zip(grid_cols, typed_row.sweep.verdicts, strict=False):
            # A diagnostic twin has no declared threshold, so no verdict: only where its
            # statistic stands against each grid value.
            row[col] = verdict if typed_row.declared else DIAGNOSTIC_WORDS.get(verdict, verdict)
        if not typed_row.declared:
            row["declared_threshold"] = None
            row["declared_verdict"] = "diagnostic only"
            row["note"] = _diagnostic_note(typed_row, grid)
        rows.append(row)
    step = _step(grid)
    return Table(
        f"sensitivity_{view.gate_id}",
        f"Gate {view.gate_id}: threshold sensitivity",
        [*SENSITIVITY_COLUMNS, *grid_cols],
        rows,
        note="each threshold rule re-evaluated over the grid, for its declared statistic and its "
        "diagnostic twin; 'at t' = verdict with threshold t (for a diagnostic twin, which no rule "
        "declared: whether the statistic is within t, no verdict)"
        + (
            f"; the grid steps by {threshold_text(step)}, so smallest_passing_threshold is the "
            "first grid value at or above the flip point (flip_threshold, the observed value)"
            if step
            else ""
        ),
        sources=[*STUDY_SOURCES, RUNS_SOURCE],
        command=f"stagewise sensitivity STUDY {view.gate_id} --json",
    )
