"""The figures of what the gates decided: the promotion funnel over all stages, and each gate's
val_bpb in every host-seed cell with the condition's mean and interval."""

from __future__ import annotations

from stagewise.gates.results import GateResult
from stagewise.report.context import GateView, ReportContext
from stagewise.report.figure_base import (
    GATE_COLOR,
    MARKERS,
    PENDING_COLOR,
    STAGE_COLOR,
    FigureData,
    color,
    figure_data,
    figure_table,
)
from stagewise.report.table_model import Row

# --------------------------------------------------------------------------- funnel


@figure_data("funnel")
def funnel_data(ctx: ReportContext) -> list[FigureData] | str:
    """Candidates per stage, and after each gate's last stage what it promoted (or passed)."""
    gate_after: dict[str, list[GateView]] = {}
    for view in ctx.gates:
        gate_after.setdefault(view.gate.stages[-1], []).append(view)
    rows: list[Row] = []

    def add(
        bar: str, kind: str, stage: str, gate: str, count: int, pending: bool, manual: bool
    ) -> None:
        rows.append(
            {
                "order": len(rows),
                "bar": bar,
                "kind": kind,
                "stage": stage,
                "gate": gate,
                "count": count,
                "pending": pending,
                "manual": manual,
                "text": f"{count} (pending)"
                if pending and count
                else "pending"
                if pending
                else str(count),
                "color": PENDING_COLOR
                if pending
                else (STAGE_COLOR if kind == "stage" else GATE_COLOR),
            }
        )

    for sp in ctx.plan.stages:
        stage_id = sp.stage.stage_id
        add(
            f"{stage_id} ({sp.stage.budget})",
            "stage",
            stage_id,
            "",
            sp.candidate_count or 0,
            not sp.known,
            False,
        )
        for view in gate_after.get(stage_id, []):
            result = view.gate_result
            gid = view.gate_id
            if view.gate.kind == "confirm" and result is not None:
                passed = [c for c in result.conditions if c.verdict.value == "pass"]
                add(f"{gid}: passed", "gate", stage_id, gid, len(passed), False, False)
            elif view.active is not None:
                manual = bool(view.active.manual)
                tag = " (manual)" if manual else ""
                add(
                    f"{gid}: promoted{tag}",
                    "gate",
                    stage_id,
                    gid,
                    len(view.active.promoted),
                    False,
                    manual,
                )
            else:
                add(f"{gid}: pending", "gate", stage_id, gid, 0, True, False)
    if not rows:
        return "no stages"
    columns = [
        "order",
        "bar",
        "kind",
        "stage",
        "gate",
        "count",
        "pending",
        "manual",
        "text",
        "color",
    ]
    pending = any(r["pending"] for r in rows)
    return [
        FigureData(
            "funnel",
            "funnel",
            "outcome",
            "Promotion funnel: stage candidates (blue), gate outcomes (orange)",
            "Candidates per stage in budget order, and after each gate's last stage the number it "
            "promoted (or passed)"
            + (
                "; grey hatched = pending (a pending stage shows the count its gate's rules "
                "fix, or at most that many)"
                if pending
                else ""
            )
            + ("; (manual) = decided outside the tool" if any(r["manual"] for r in rows) else "")
            + ".",
            ("tables/plan.csv", "tables/decisions.csv", "study/study.toml"),
            figure_table("funnel", "Promotion funnel", columns, rows),
        )
    ]


# --------------------------------------------------------------------------- per gate


def condition_intervals(result: GateResult | None) -> dict[str, tuple[float, float]]:
    """Each condition's interval of its mean val_bpb, where the gate result carries one."""
    out: dict[str, tuple[float, float]] = {}
    for cond in result.conditions if result is not None else ():
        iv = cond.confidence.interval if cond.confidence else None
        if iv is not None and iv.mean is not None:
            low, high = iv.mean
            if low is not None and high is not None:
                out[cond.condition_id] = (low, high)
    return out


def interval_level(result: GateResult | None) -> float | None:
    """The confidence level of the conditions' intervals (e.g. 0.9), when the result has them."""
    for cond in result.conditions if result is not None else ():
        if cond.confidence and cond.confidence.interval:
            return cond.confidence.interval.level
    return None


def host_seed_rows(ctx: ReportContext, view: GateView) -> list[Row]:
    """One row per (condition, cell) of the gate, in matrix order, with where it is drawn."""
    conds = [c for c in ctx.study.condition_ids if any(x.condition_id == c for x in view.cells)]
    keys = sorted({(x.host, x.seed) for x in view.cells})
    hosts = sorted({h for h, _ in keys})
    result = view.gate_result
    means = {c.condition_id: c.shown("mean_val_bpb") for c in result.conditions} if result else {}
    intervals = condition_intervals(result)
    width = 0.6  # of one condition's slot, shared by its cells
    rows = []
    for x in view.cells:
        k = keys.index((x.host, x.seed))
        cid = x.condition_id
        low, high = intervals.get(cid, (None, None))
        rows.append(
            {
                "gate": view.gate_id,
                "stage": x.stage,
                "condition_id": cid,
                "label": ctx.label(cid),
                "reference": cid == ctx.study.reference,
                "x": conds.index(cid),
                "offset": (k - (len(keys) - 1) / 2) * width / max(1, len(keys)),
                "host": x.host,
                "seed": x.seed,
                "cell": k,
                "color": color(k),
                "marker": MARKERS[hosts.index(x.host) % len(MARKERS)],
                "val_bpb": x.val_bpb,
                "mean_val_bpb": means.get(cid),
                "interval_low": low,
                "interval_high": high,
            }
        )
    rows.sort(key=lambda r: (r["x"], r["cell"]))
    return rows


HOST_SEED_COLUMNS = (
    "gate",
    "stage",
    "condition_id",
    "label",
    "reference",
    "x",
    "offset",
    "host",
    "seed",
    "cell",
    "color",
    "marker",
    "val_bpb",
    "mean_val_bpb",
    "interval_low",
    "interval_high",
)


@figure_data("host_seed_cells")
def host_seed_cells_data(ctx: ReportContext) -> list[FigureData] | str:
    out = []
    for view in ctx.gates:
        if not view.cells:
            continue
        rows = host_seed_rows(ctx, view)
        has_interval = any(r["interval_low"] is not None for r in rows)
        level = interval_level(view.gate_result)
        what = f"its {level:.0%} interval" if level is not None else "its interval"
        has_ref = any(r["reference"] for r in rows)
        name = f"host_seed_cells_{view.gate_id}"
        out.append(
            FigureData(
                name,
                "host_seed_cells",
                f"gate:{view.gate_id}",
                f"Gate {view.gate_id}: val_bpb in each host-seed cell ({' + '.join(view.gate.stages)})",
                "Each condition's val_bpb in every host-seed cell of the gate (marker = host "
                "block, colour = cell); the black bar is the condition's mean"
                + (f" and the vertical line {what}" if has_interval else "")
                + ("; the reference is shaded" if has_ref else "")
                + ".",
                ("results/runs.csv", "study/study.toml"),
                figure_table(
                    name, f"Gate {view.gate_id}: host-seed cells", HOST_SEED_COLUMNS, rows
                ),
            )
        )
    return out or "no gate has recorded cells yet"
