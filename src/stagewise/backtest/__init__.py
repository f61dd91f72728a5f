"""Back-testing promotion policies on ground-truth curves (`stagewise curves`, `backtest`).

table      the curves table contract: read, validate (one-line errors), write
collect    `stagewise curves DIR`: the full factorial through the study's own executors
synthetic  parametric curves with crossings, host and seed noise
draw       which seeds and hosts each level uses in each replay (vectorised)
policies/  one module per policy behind a registry
replay     run policies on the same draws, score them against the truth
figure     the Pareto figure from a pure data function
output     backtest.json, policies.csv, pareto.csv/png
report     the "Back-test" section of `stagewise report`
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from stagewise.backtest.replay import BacktestResult, PolicyResult, Truth, backtest
from stagewise.backtest.table import CurveRow, CurvesError, CurvesTable, read_curves, write_curves


def shipped_curves() -> Path:
    """The ground truth that ships with the package (made by `stagewise curves`, see README)."""
    return Path(str(files("stagewise.examples") / "curves" / "curves.csv"))


def shipped_study() -> Path:
    """The study that made the shipped ground truth; its frozen gates are policy `study`."""
    return Path(str(files("stagewise.examples") / "curves" / "study"))


__all__ = [
    "BacktestResult",
    "CurveRow",
    "CurvesError",
    "CurvesTable",
    "PolicyResult",
    "Truth",
    "backtest",
    "read_curves",
    "shipped_curves",
    "shipped_study",
    "write_curves",
]
