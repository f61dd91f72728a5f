"""The decision records of an applied gate, rendered from its typed result: `decisions/<gate>.json`
(exactly the `stagewise gate --json` object), `.csv` (one row per condition) and `.md` (a
human-readable record). One of the three renderings of a gate result, beside the terminal's
(`cli/gate_view.py`) and the HTML report's (`report/gate_sections.py`); the wording they share
is in `gates/wording.py`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stagewise.analysis.run_checks import RunCheck
from stagewise.gates.results import (
    CONDITION_KEYS,
    INTERVAL_KEYS,
    Bounds,
    ConditionResult,
    GateConfidence,
    GateResult,
    finite,
)
from stagewise.gates.wording import (
    PRECISION_NOTE,
    promoted_set_changes,
    sentence,
)
from stagewise.json_types import JsonObject
from stagewise.paths import safe_join

__all__ = [
    "CONFIDENCE_COLUMNS",
    "DECISIONS_DIR",
    "GateRecord",
    "gate_csv",
    "gate_json",
    "gate_markdown",
    "write_records",
]

DECISIONS_DIR = "decisions"

# Verdict-confidence columns appended to the CSV record when the result carries them.
CONFIDENCE_COLUMNS = (
    "p_verdict",
    "decisive",
    "mean_low",
    "mean_high",
    "mean_gap_low",
    "mean_gap_high",
    "max_gap_low",
    "max_gap_high",
)

Cell = str | int | float | bool


@dataclass(frozen=True)
class GateRecord:
    """A gate applied by one call, as its records and `stagewise gate --json` show it: the
    result, whether this call recorded the decision, and the runs flagged among those counted."""

    result: GateResult
    recorded: bool = True
    dry_run: bool = False
    min_steps: int = 0
    checks: Sequence[RunCheck] = ()

    @property
    def flagged(self) -> tuple[RunCheck, ...]:
        return tuple(c for c in self.checks if c.flags)

    def to_json(self) -> JsonObject:
        """The `stagewise gate --json` object: the result's JSON, then what this call did."""
        return {
            **self.result.to_json(),
            "decision_recorded": self.recorded,
            "dry_run": self.dry_run,
            "min_steps": self.min_steps,
            "flagged_runs": [c.to_json() for c in self.flagged],
        }


def gate_json(record: GateRecord) -> str:
    return json.dumps(record.to_json(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _confidence_cells(c: ConditionResult) -> list[Cell]:
    conf = c.confidence
    out: list[Cell | None] = [conf.p_verdict if conf else None, conf.decisive if conf else None]
    for key in INTERVAL_KEYS:
        pair = conf.interval.bounds(key) if conf and conf.interval else None
        out += list(pair or (None, None))
    return ["" if v is None else v for v in out]


def gate_csv(record: GateRecord) -> str:
    result = record.result
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    with_conf = result.confidence is not None
    writer.writerow(CONDITION_KEYS + (CONFIDENCE_COLUMNS if with_conf else ()))
    for c in result.conditions:
        cells: list[Cell] = []
        for key in CONDITION_KEYS:
            if key == "reasons":
                cells.append("; ".join(c.verdict.texts))
            elif key == "verdict":
                cells.append(c.verdict.value)
            else:
                value = c.shown(key)
                cells.append("" if value is None else value)
        writer.writerow(cells + (_confidence_cells(c) if with_conf else []))
    return buf.getvalue()


def _f(value: object, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pair(v: Bounds | None) -> str:
    return "-" if not v else f"[{_f(v[0])}, {_f(v[1])}]"


def confidence_markdown(result: GateResult, conf: GateConfidence) -> list[str]:
    """The record's verdict-confidence section."""
    lines = [
        "## Verdict confidence",
        "",
        sentence(conf.method_sentence + " (docs/confidence.md)"),
        "",
        "| condition | verdict | p_verdict | decisive | mean | mean gap to ref | max gap to ref |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result.conditions:
        c = r.confidence
        iv = c.interval if c else None
        decisive = "-" if c is None or c.decisive is None else ("yes" if c.decisive else "**no**")
        bounds = [_pair(iv.bounds(k) if iv else None) for k in INTERVAL_KEYS]
        lines.append(
            f"| {r.condition_id} | {r.verdict.value} | {_f(c.p_verdict if c else None, 3)} "
            f"| {decisive} | {' | '.join(bounds)} |"
        )
    pooled = conf.variance.to_json() if conf.variance is not None else None
    if pooled:
        lines += [
            "",
            "Variance components of the gaps to the reference (pooled over conditions): "
            f"condition-by-host sd {_f(pooled['sd_host'])} (df {pooled['df_host']}), "
            f"within-host seed sd {_f(pooled['sd_seed'])} (df {pooled['df_seed']}).",
        ]
    lines += [f"- note: {n}" for n in conf.notes]
    return [*lines, ""]


def gate_markdown(record: GateRecord) -> str:
    r = record.result
    freeze = r.freeze
    lines = [
        f"# Gate {r.gate} ({r.kind})",
        "",
        f"- pooled stages: {', '.join(r.stages)} (budget {r.budget_seconds:g} s)",
        f"- reference: {r.reference}",
        "- cells: " + ", ".join(f"{c.host}/seed{c.seed}" for c in r.cells),
        f"- frozen sha256: `{r.frozen_sha256}`",
        f"- frozen at: {freeze.frozen_at if freeze else '-'} ({freeze.kind if freeze else '-'})",
        "- post hoc: "
        + ("YES: results existed when it was frozen" if freeze and freeze.post_hoc else "no"),
        "",
        "## Rules",
        "",
    ]
    for rule in r.rules:
        why = f": {rule.reason}" if rule.reason else ""
        lines.append(f"- `{rule.description}`{why}")
    lines += ["", "## Freeze and amendment history", ""]
    for a in r.amendments:
        reason = f", reason: {a.reason}" if a.reason else ""
        hoc = ", post hoc" if a.post_hoc else ""
        lines.append(f"- {a.kind} {a.frozen_at} `{a.sha256[:16]}`{hoc}{reason}")
    if not r.amendments:
        lines.append("- none  ``")
    if r.manual:
        lines += ["", "## Decisions taken outside the tool (manual)", ""]
        for m in r.manual:
            state = f"withdrawn {m.withdrawn_at}" if m.withdrawn_at else "active"
            lines.append(f"- MANUAL ({state}): {', '.join(m.promoted)}: {m.reason}")
    lines += [
        "",
        "## Conditions",
        "",
        "| condition | label | role | n | mean val_bpb | sd | mean rank | best | worst | first | "
        "gap from best | mean gap to ref | max gap to ref | params_M | tokens_M | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r.conditions:
        v = c.shown
        lines.append(
            f"| {c.condition_id} | {c.label} | {c.role} | {c.n_cells} | "
            f"{_f(v('mean_val_bpb'))} | {_f(v('sd_val_bpb'))} | {_f(v('mean_rank'), 2)} | "
            f"{_f(c.best_rank)} | {_f(c.worst_rank)} | {_f(c.first_rank_cells)} | "
            f"{_f(v('gap_from_best'))} | {_f(v('mean_gap_to_reference'))} | "
            f"{_f(v('max_gap_to_reference'))} | {_f(v('params_M'))} | {_f(v('tokens_M'))} | "
            f"**{c.verdict.value}** |"
        )
    lines += ["", "## Verdicts and reasons", ""]
    for c in r.conditions:
        lines.append(f"- **{c.label}** ({c.condition_id}): {c.verdict.value}")
        lines += [f"  - {reason}" for reason in c.verdict.texts]
    lines += ["", f"Promoted: {', '.join(r.promoted) or 'none'}", ""]
    if r.confidence is not None:
        lines += confidence_markdown(r, r.confidence)
    if r.incomplete:
        lines += ["## Incomplete", ""]
        for inc in r.incomplete:
            cells = ", ".join(f"{c.host}/seed{c.seed}" for c in inc.missing)
            lines.append(f"- {inc.condition_id}: missing {cells}")
        lines.append("")
    lines += [
        "## Rank agreement",
        "",
        f"- Kendall's W over cells: {_f(finite(r.kendalls_w), 4)}",
    ]
    for p in r.host_pairs:
        lines.append(
            f"- {p.host_a} vs {p.host_b}: Kendall tau {_f(p.kendall_tau, 4)}, "
            f"Spearman rho {_f(p.spearman_rho, 4)}"
        )
    if r.stability:
        lines += [
            "",
            "## Leave-one-cell-out stability",
            "",
            f"The {promoted_set_changes(r.stability_changed, len(r.stability))} leave-one-out "
            "recomputations.",
        ]
    if r.published_comparison:
        lines += ["", "## Precision note (against the published summary)", ""]
        for d in r.published_comparison:
            lines.append(
                f"- {d.label} {d.column}: recomputed {d.recomputed!r}, published "
                f"{d.published} ({d.table}); {PRECISION_NOTE}, so the last printed digit can "
                "differ"
            )
    if record.flagged:
        lines += [
            "",
            "## Flagged runs (ranked all the same: read their numbers with care)",
            "",
        ]
        for check in record.flagged:
            lines.append(f"- {check.run}: {', '.join(check.flags)}: {'; '.join(check.notes)}")
    lines += [
        "",
        "Numbers are unrounded in the JSON and CSV records; this page shows six decimals.",
        "",
    ]
    return "\n".join(lines)


def record_paths(folder: Path, gate_id: str) -> tuple[Path, ...]:
    """`<folder>/<gate>.{json,csv,md}`, refused (StudyError) when the id would leave `folder`."""
    return tuple(safe_join(folder, f"{gate_id}.{suffix}") for suffix in ("json", "csv", "md"))


def write_records(folder: Path, record: GateRecord) -> tuple[Path, ...]:
    paths = record_paths(folder, record.result.gate)  # the gate id is a file name: checked first
    folder.mkdir(parents=True, exist_ok=True)
    for path, render in zip(paths, (gate_json, gate_csv, gate_markdown), strict=True):
        tmp = path.with_suffix(f"{path.suffix}.tmp")
        tmp.write_text(render(record), encoding="utf-8")
        tmp.replace(path)
    return paths
