"""The terminal rendering of a gate result (`stagewise gate` without --json), read from the
typed `GateResult`. One of its three renderings, beside the decision records
(`gates/records.py`) and the HTML report (`report/gate_sections.py`); the wording they share is
in `gates/wording.py`."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from stagewise.cli.common import fmt, fmt_count
from stagewise.gates.results import ConditionResult, GateConfidence, GateResult
from stagewise.gates.wording import PRECISION_NOTE, promoted_set_changes


def _p_verdict(c: ConditionResult) -> str:
    p = c.confidence.p_verdict if c.confidence else None
    if p is None:
        return "-"
    return f"{p:.3f}" + ("" if c.confidence and c.confidence.decisive else " (not decisive)")


def print_gate(console: Console, r: GateResult) -> None:
    """The pooled-cells table, verdicts with reasons, agreement and stability of one gate."""
    freeze = r.freeze
    console.print(
        f"gate {r.gate} ({r.kind}) over {', '.join(r.stages)}: "
        f"{len(r.cells)} cells, reference {r.reference}"
    )
    console.print(
        f"frozen sha256 {r.frozen_sha256} at {freeze.frozen_at if freeze else None}"
        + (" [yellow](post hoc)[/]" if freeze and freeze.post_hoc else "")
    )
    if freeze is not None and isinstance(freeze.recipes, str):
        console.print(f"  {freeze.recipes}")  # "recipes not frozen (format 1)"
    for a in r.amendments:
        if a.kind == "amend":
            console.print(f"  amended {a.frozen_at}: {a.reason}")
    for n in r.not_counted:
        console.print(f"  not counted: {n.run}: {n.why}", markup=False)
    for m in r.manual:
        state = "withdrawn" if m.withdrawn_at else "active"
        console.print(f"  MANUAL decision ({state}): {', '.join(m.promoted)}: {m.reason}")
    table = Table(title=f"{r.gate}: pooled cells (unrounded in --json)")
    cols: tuple[str, ...] = ("label", "n", "mean", "sd", "rank (best-worst)", "first", "gap best")
    cols += ("mean gap ref", "max gap ref", "params_M", "verdict")
    conf = r.confidence
    if conf is not None:
        cols += (f"p_verdict ({conf.confidence:g})",)
    for col in cols:
        table.add_column(col, justify="left" if col in ("label", "verdict") else "right")
    for c in r.conditions:
        ranks = (
            f"{fmt(c.mean_rank, 2)} ({c.best_rank}-{c.worst_rank})"
            if c.mean_rank is not None
            else "-"
        )
        table.add_row(
            c.label,
            str(c.n_cells),
            fmt(c.mean_val_bpb),
            fmt(c.sd_val_bpb),
            ranks,
            fmt_count(c.first_rank_cells),
            fmt(c.gap_from_best),
            fmt(c.mean_gap_to_reference),
            fmt(c.max_gap_to_reference),
            fmt(c.params_M, 2),
            c.verdict.value,
            *([_p_verdict(c)] if conf is not None else []),
        )
    console.print(table)
    if conf is not None:
        _confidence_lines(console, r, conf)
    for c in r.conditions:
        console.print(f"[bold]{c.label}[/] {c.verdict.value}")
        for reason in c.verdict.texts:
            console.print(f"  - {reason}", markup=False)
    console.print(f"promoted: {', '.join(r.promoted) or 'none'}")
    for inc in r.incomplete:
        cells = ", ".join(f"{c.host}/seed{c.seed}" for c in inc.missing)
        console.print(f"incomplete: {inc.condition_id} (missing {cells})")
    console.print(f"rank agreement: Kendall's W over cells {fmt(r.kendalls_w, 3)}")
    for p in r.host_pairs:
        console.print(
            f"  {p.host_a} vs {p.host_b}: Kendall tau {fmt(p.kendall_tau, 3)}, "
            f"Spearman rho {fmt(p.spearman_rho, 3)}"
        )
    for d in r.published_comparison or ():
        console.print(
            f"precision note: {d.label} {d.column} recomputed {d.recomputed!r} vs "
            f"published {d.published} ({d.table}): {PRECISION_NOTE}",
            markup=False,
        )
    if r.stability:
        console.print(
            f"leave-one-cell-out: the "
            f"{promoted_set_changes(r.stability_changed, len(r.stability))} recomputations"
        )


def _confidence_lines(console: Console, r: GateResult, conf: GateConfidence) -> None:
    console.print(f"verdict confidence: {conf.method_sentence}; intervals:", markup=False)
    for c in r.conditions:
        iv = c.confidence.interval if c.confidence else None
        # The reference's gaps to itself are zero by construction: only its mean is shown.
        names = ("mean",) if c.condition_id == r.reference else ("mean", "mean_gap", "max_gap")
        parts = []
        for k in names:
            pair = iv.bounds(k) if iv else None
            if pair:
                parts.append(f"{k} [{fmt(pair[0])}, {fmt(pair[1])}]")
        console.print(f"  {c.label}: {'; '.join(parts) or '-'}", markup=False)
    pooled = conf.variance.to_json() if conf.variance is not None else None
    if pooled:
        console.print(
            "variance of the gaps to the reference (pooled): host "
            f"sd {fmt(pooled['sd_host'])} (df {pooled['df_host']}), seed "
            f"sd {fmt(pooled['sd_seed'])} (df {pooled['df_seed']})",
            markup=False,
        )
    for note in conf.notes:
        console.print(f"  note: {note}", markup=False)
