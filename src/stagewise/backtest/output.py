"""Writing a back-test: backtest.json, policies.csv, pareto.csv/png and decision_accuracy.png
(the evidence per level) in one folder.

With `--study DIR` and no `--out`, the folder is `DIR/backtest/` (RESULT_DIR), which is where
`stagewise report` looks for a "Back-test" section.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from stagewise.backtest.figure import (
    draw_decision_accuracy,
    draw_pareto,
    pareto_points,
    write_pareto_csv,
)
from stagewise.backtest.replay import BacktestResult
from stagewise.budget_units import json_safe as _clean

RESULT_DIR = "backtest"
RESULT_JSON = "backtest.json"
POLICY_COLUMNS = (
    "policy",
    "label",
    "p_retain",
    "p_retain_low",
    "p_retain_high",
    "p_select",
    "p_select_low",
    "p_select_high",
    "mean_regret",
    "mean_regret_low",
    "mean_regret_high",
    "gpu_hours",
    "gpu_hours_low",
    "gpu_hours_high",
    "cost_vs_final_only",
    "cost_vs_final_only_low",
    "cost_vs_final_only_high",
    "cost",
    "cost_low",
    "cost_high",
    "cost_unit",
    "cost_model",
    "budget_unit",
    "metric",
    "unknown_replays",
)


def policy_rows(result: BacktestResult) -> list[dict[str, Any]]:
    rows = []
    for p in result.policies:
        data = p.to_json()
        row: dict[str, Any] = {"policy": p.policy, "label": p.label}
        for key in (
            "p_retain",
            "p_select",
            "mean_regret",
            "gpu_hours",
            "cost_vs_final_only",
            "cost",
        ):
            row[key] = data[key]
            row[f"{key}_low"], row[f"{key}_high"] = data[f"{key}_interval"] or (None, None)
        row["cost_unit"] = result.budget_unit
        row["cost_model"] = result.cost_model
        row["budget_unit"] = result.budget_unit
        row["metric"] = result.metric
        row["unknown_replays"] = p.unknown
        rows.append(row)
    return rows


def write_result(
    result: BacktestResult,
    folder: Path,
    *,
    figure: bool = True,
    extra_points: list[dict[str, Any]] | None = None,
    extra_json: dict[str, Any] | None = None,
) -> list[Path]:
    """Write the result; `extra_points` (the recommended protocol) join the Pareto figure."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    path = folder / RESULT_JSON
    data = {**result.to_json(), **(extra_json or {})}
    path.write_text(json.dumps(_clean(data), indent=2) + "\n", encoding="utf-8")
    written.append(path)
    path = folder / "policies.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=POLICY_COLUMNS)
        writer.writeheader()
        for row in policy_rows(result):
            writer.writerow(
                {
                    k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v))
                    for k, v in row.items()
                }
            )
    written.append(path)
    points = pareto_points(result, extra_points)
    written.append(write_pareto_csv(points, folder / "pareto.csv"))
    if figure:
        written.append(draw_pareto(points, folder / "pareto.png", cost_model=result.cost_model))
        if result.evidence is not None:
            written.append(
                draw_decision_accuracy(result.evidence, folder / "decision_accuracy.png")
            )
    return written


__all__ = ["POLICY_COLUMNS", "RESULT_DIR", "RESULT_JSON", "policy_rows", "write_result"]
