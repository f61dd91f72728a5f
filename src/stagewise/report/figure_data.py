"""The numbers behind every figure, in the order the report shows them: `FIGURE_DATA`.

Each figure of the report is drawn from one `FigureData` (figure_base.py): a table that the
report also writes beside the picture (`figures/<name>.csv` and `.json`), a title that says no
more than the data shows, and the section of the report it belongs to. The data functions are
pure (no matplotlib), registered by `@figure_data(name)` in one module per group of figures:

    decision_figures.py    funnel, host_seed_cells        what the gates promoted, from which cells
    trajectory_figures.py  gap_trajectory, cost_quality   the conditions across gates, budget order
    training_figures.py    budget, learning_curves        GPU-hours; smoothed train loss (the
                                                          curves are read by loss_curves.py)

`figures.py` draws them; `verify.py` re-derives them.
"""

from __future__ import annotations

# The registry and the shared helpers live in figure_base.py, below the figure modules, so that
# they import it and not this module (no import cycle, nothing half-initialised). The figure
# modules register their families when imported; importing them here is what makes the
# registry complete whenever this module is imported.
from stagewise.report import decision_figures, training_figures, trajectory_figures  # noqa: F401
from stagewise.report.figure_base import REGISTERED_FIGURES, FigureFn

__all__ = ["FIGURE_DATA", "FIGURE_ORDER"]

# The report's order of the figure families (the figure manifest and verify follow it). It is
# spelt out rather than taken from the registry because registration follows import order,
# and any importer (a test, say) may import one figure module before another.
FIGURE_ORDER = (
    "funnel",
    "gap_trajectory",
    "cost_quality",
    "host_seed_cells",
    "budget",
    "learning_curves",
)

if set(REGISTERED_FIGURES) != set(FIGURE_ORDER):
    raise RuntimeError(
        f"figure families registered {sorted(REGISTERED_FIGURES)} but FIGURE_ORDER lists "
        f"{sorted(FIGURE_ORDER)}: add each @figure_data family to FIGURE_ORDER (figure_data.py) "
        "and import its module there"
    )

# name -> function returning the figures of that family, or why there is nothing to draw
FIGURE_DATA: dict[str, FigureFn] = {name: REGISTERED_FIGURES[name] for name in FIGURE_ORDER}
