"""Small tables and studies for the back-test tests."""

from __future__ import annotations

import json
from pathlib import Path

from stagewise.backtest.table import CurveRow, CurvesTable, build_table
from stagewise.ledger import Ledger

FAKE = Path(__file__).with_name("fake_curve_trainer.py")


def table_from(values: dict[str, list[float]], budgets: list[float]) -> CurvesTable:
    """A noise-free table: one seed, one host, values[condition][level]."""
    rows = [
        CurveRow(cid, b, 1, "h1", v)
        for cid, per_level in values.items()
        for b, v in zip(budgets, per_level, strict=True)
    ]
    return build_table(rows, "hand")


def curve_study(
    folder: Path,
    conditions: dict[str, tuple[float, float]],
    *,
    gates: str = "",
    sleep: float = 0.0,
    workers: int = 2,
) -> Path:
    """A study whose conditions run the fake curve trainer (final, early) on one local host."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["label,condition_id,role,final,early,sleep"]
    for i, (cid, (final, early)) in enumerate(conditions.items()):
        role = "reference" if i == 0 else "variant"
        rows.append(f"{cid},{cid},{role},{final},{early},{sleep}")
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    command = [
        "{python}",
        str(FAKE),
        "--final",
        "{final}",
        "--early",
        "{early}",
        "--budget",
        "{budget_seconds}",
        "--seed",
        "{seed}",
        "--journal",
        "{study}/journal.txt",
        "--sleep",
        "{sleep}",
    ]
    (folder / "study.toml").write_text(
        f"""[study]
name = "curvefake"
reference = "{next(iter(conditions))}"
matrix = "matrix.csv"
[runner]
command = {json.dumps(command)}
grace_seconds = 5
[hosts.block-a]
executor = "local"
devices = ["cpu"]
workers = {workers}
[stages.s1]
budget = "1s"
seeds = [1]
hosts = ["block-a"]
candidates = "all"
{gates}"""
    )
    Ledger.open(folder).close()
    return folder
