"""What every figure's data shares: the `FigureData` record, the `@figure_data` registry, the
Okabe-Ito palette and per-condition styles, and small readers of typed results.

The numbers behind a figure are computed by pure functions (no matplotlib here or in the figure
modules that use this one); `figures.py` only maps them to marks, as optuna's `visualization/`
splits `_get_*_info` from plotting. `figure_data.py` imports every figure module and puts the
families in the report's order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from stagewise.budget_units import format_duration
from stagewise.report.context import ReportContext
from stagewise.report.published import as_float
from stagewise.report.tables import Table

# Okabe & Ito (2008), the colour-blind-safe palette; black last.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
STAGE_COLOR, GATE_COLOR, PENDING_COLOR = OKABE_ITO[0], OKABE_ITO[1], "#999999"
EXECUTED_COLOR, ADDED_COLOR = OKABE_ITO[0], OKABE_ITO[5]


@dataclass(frozen=True)
class FigureData:
    """One figure's numbers: `table` is what is drawn, written beside the PNG/SVG."""

    name: str  # file stem under figures/
    kind: str  # the drawing function that draws it (figures.py registry)
    section: str  # "outcome", "gate:<id>", "across", "curves", "budget"
    title: str
    caption: str
    sources: tuple[str, ...]
    table: Table


FigureFn = Callable[[ReportContext], "list[FigureData] | str"]
# name -> function returning the figures of that name family, or why there is nothing to draw;
# in the order the figure modules were imported (the report's order is `FIGURE_DATA`'s).
REGISTERED_FIGURES: dict[str, FigureFn] = {}


def figure_data(name: str) -> Callable[[FigureFn], FigureFn]:
    def wrap(fn: FigureFn) -> FigureFn:
        REGISTERED_FIGURES[name] = fn
        return fn

    return wrap


def color(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


def condition_style(ctx: ReportContext, condition_id: str) -> dict[str, str]:
    """One colour/marker/linestyle per condition, the same in every figure (matrix order)."""
    ids = ctx.study.condition_ids
    i = ids.index(condition_id) if condition_id in ids else len(ids)
    return {
        "color": color(i),
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[(i // len(OKABE_ITO)) % len(LINESTYLES)],
    }


def budget_label(ctx: ReportContext, stages: Sequence[str]) -> str:
    """The budget of the last of `stages` in study order, in its own unit ('10m', '50Mtok')."""
    order = list(ctx.study.stages)
    last = max(stages, key=lambda s: order.index(s) if s in order else -1)
    stage = ctx.study.stages[last]
    budget = getattr(stage, "budget", None)
    return str(budget) if budget is not None else format_duration(stage.budget_seconds)


def as_number(value: object) -> float | None:
    """A number from a result or config value (a numeric string too); None for bools and text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    return as_float(str(value))


def figure_table(
    name: str, title: str, columns: Sequence[str], rows: Sequence[Mapping[str, object]]
) -> Table:
    """The table of one figure's numbers, written beside it as figures/<name>.csv and .json."""
    return Table(name, title, list(columns), rows, note=f"the numbers drawn in figures/{name}.png")
