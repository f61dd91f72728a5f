"""The "Back-test" section of `stagewise report`, for a study that holds a back-test result.

`stagewise backtest CURVES --study DIR` stores its result in `DIR/backtest/` (backtest.json,
policies.csv, pareto.csv, pareto.png); this module reads it back and renders the section: the
truth, one row per policy with its 95% intervals, the answer to "which policy keeps the
long-horizon best with p_retain >= 0.9 for the fewest GPU-hours", and the Pareto figure
(embedded, so the report stays one self-contained file). No result, no section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stagewise.backtest.output import RESULT_DIR, RESULT_JSON
from stagewise.html_parts import e, png_src, table_html

TARGET = 0.9  # the p_retain a policy must reach to count as "keeps the best"


@dataclass(frozen=True)
class SectionData:
    truth: dict[str, Any]
    replays: int
    final_only_gpu_hours: float | None
    rows: tuple[dict[str, Any], ...]
    cheapest: dict[str, Any] | None  # the cheapest policy with p_retain >= TARGET
    study_row: dict[str, Any] | None  # the study's own gates, when back-tested
    figure: Path | None
    problem: str | None = None  # why the stored result could not be used
    cost_unit: str = "GPU-hours"
    cost_model: str = "restart"


def section_data(study_root: Path) -> SectionData | None:
    """The section's numbers from `<study>/backtest/backtest.json`, or None when absent."""
    folder = Path(study_root) / RESULT_DIR
    path = folder / RESULT_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = tuple(dict(p) for p in data["policies"])
        truth = dict(data["truth"])
        replays = int(data["replays"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return SectionData({}, 0, None, (), None, None, None, f"{RESULT_DIR}/{RESULT_JSON}: {exc}")
    keeping = [r for r in rows if (r.get("p_retain") or 0) >= TARGET]
    cheapest = min(keeping, key=_cost) if keeping else None
    study_row = next((r for r in rows if r.get("policy") == "study"), None)
    figure = folder / "pareto.png"
    return SectionData(
        truth=truth,
        replays=replays,
        final_only_gpu_hours=data.get("final_only_gpu_hours"),
        rows=rows,
        cheapest=cheapest,
        study_row=study_row,
        figure=figure if figure.is_file() else None,
        cost_unit=str(data.get("cost_unit") or "GPU-hours"),
        cost_model=str(data.get("cost_model") or "restart"),
    )


def _unit_word(truth: dict[str, Any]) -> str:
    unit = truth.get("budget_unit") or "seconds"
    return "s" if unit == "seconds" else str(unit)


def _cost(row: dict[str, Any]) -> float:
    """GPU-hours when the table converts to them, else the cost in the table's own unit."""
    value = row.get("gpu_hours")
    if value is None:
        value = row.get("cost")
    return float(value) if isinstance(value, int | float) else 0.0


def _num(value: Any, digits: int) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.{digits}f}"


def _interval(row: dict[str, Any], key: str, digits: int) -> str:
    pair = row.get(f"{key}_interval")
    if not isinstance(pair, list) or len(pair) != 2:
        return ""
    return f" [{_num(pair[0], digits)}, {_num(pair[1], digits)}]"


def render_section(data: SectionData) -> str:
    if data.problem:
        return f"<p>A back-test result is stored but cannot be read: {e(data.problem)}.</p>"
    truth = data.truth
    out = [
        f"<p>Back-test of promotion policies over {data.replays} replays of resampled seeds and "
        f"hosts (stored in <code>{RESULT_DIR}/</code> by <code>stagewise backtest --study</code>). "
        f"Truth: <b>{e(str(truth.get('condition_id')))}</b>, best mean "
        f"{e(str(truth.get('metric') or 'val_bpb'))} {_num(truth.get('mean_val_bpb'), 6)} at "
        f"{_num(truth.get('final_budget_seconds'), 0)} {e(_unit_word(truth))} "
        f"over every seed and host. Costs use the <b>{e(data.cost_model)}</b> cost model.</p>"
    ]
    if data.cheapest is not None:
        c = data.cheapest
        out.append(
            f"<p>Cheapest policy with p_retain &ge; {TARGET}: <b>{e(str(c.get('label')))}</b>, "
            f"{_num(_cost(c), 4)} {e(data.cost_unit)} per decision, "
            f"{_num(c.get('cost_vs_final_only'), 3)}&times; the cost of final_only.</p>"
        )
    else:
        out.append(f"<p>No policy reached p_retain &ge; {TARGET}.</p>")
    if data.study_row is not None:
        s = data.study_row
        verdict = "does" if (s.get("p_retain") or 0) >= TARGET else "does not"
        out.append(
            f"<p>The study's own frozen gates {verdict} keep the best with p_retain &ge; {TARGET}: "
            f"p_retain {_num(s.get('p_retain'), 3)} at {_num(s.get('cost_vs_final_only'), 3)}"
            "&times; final_only's cost.</p>"
        )
    head = ("policy", "p_retain [95%]", "p_select", "mean regret", data.cost_unit, "× final_only")
    rows = [
        (
            f"<td>{e(str(r.get('label', r.get('policy'))))}</td>",
            f"<td>{_num(r.get('p_retain'), 3)}{_interval(r, 'p_retain', 2)}</td>",
            f"<td>{_num(r.get('p_select'), 3)}</td>",
            f"<td>{_num(r.get('mean_regret'), 4)}</td>",
            f"<td>{_num(_cost(r), 4)}</td>",
            f"<td>{_num(r.get('cost_vs_final_only'), 3)}</td>",
        )
        for r in data.rows
    ]
    out.append(table_html([e(h) for h in head], rows))
    accuracy = data.figure.with_name("decision_accuracy.png") if data.figure else None
    if accuracy is not None and accuracy.is_file():
        out.append(
            "<figure><img alt='decision accuracy against compute, one line per level' "
            f"src='{png_src(accuracy)}'><figcaption>Decision accuracy (the share of "
            "pairs of conditions ordered as at the final level) against compute, one line per "
            "budget level.</figcaption></figure>"
        )
    if data.figure is not None:
        out.append(
            "<figure><img alt='GPU-hours against p_retain, one point per policy' "
            f"src='{png_src(data.figure)}'><figcaption>GPU-hours against p_retain, one "
            "point per policy, 95% interval bars; the line joins the Pareto front.</figcaption>"
            "</figure>"
        )
    return "".join(out)


def backtest_sections(study_root: Path) -> list[tuple[str, str, str]]:
    """[(id, title, html)] for the report: one "Back-test" section, or none without a result."""
    data = section_data(study_root)
    if data is None:
        return []
    return [("backtest", "Back-test", render_section(data))]


__all__ = ["TARGET", "SectionData", "backtest_sections", "render_section", "section_data"]
