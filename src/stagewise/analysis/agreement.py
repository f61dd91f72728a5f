"""Rank agreement across cells and hosts, and leave-one-cell-out stability of a decision.

Kendall's W measures how much all cells agree on the order of the conditions (1 = identical
orders). Between hosts, each host's mean ranking (the mean of its cells' ranks) is compared with
Kendall's tau and Spearman's rho: the paper's "host rank agreement was low" made a number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from stagewise.analysis.cells import Cell
from stagewise.json_types import JsonObject


@dataclass(frozen=True)
class HostPair:
    host_a: str
    host_b: str
    kendall_tau: float | None
    spearman_rho: float | None

    def to_dict(self) -> JsonObject:
        return {
            "host_a": self.host_a,
            "host_b": self.host_b,
            "kendall_tau": self.kendall_tau,
            "spearman_rho": self.spearman_rho,
        }


def kendalls_w(
    cells: Sequence[Cell], values: Mapping[str, Mapping[Cell, float]], conditions: Sequence[str]
) -> float | None:
    """Kendall's coefficient of concordance over cells (raters) and conditions (items).

    Ranks within a cell are average ranks for ties, with the usual tie correction. None when it
    is undefined (fewer than two conditions or cells, or every cell all tied).
    """
    m, n = len(cells), len(conditions)
    if m < 2 or n < 2:
        return None
    rows = [[values[cid][cell] for cid in conditions] for cell in cells]
    # One call over every cell: rankdata's per-call overhead made this quadratic-looking at
    # 20,000 cells (issue 18). Average ranks are multiples of 1/2, so the sums are exact.
    from scipy import stats as sps  # lazy: scipy.stats costs ~0.5 s at CLI start-up

    totals = sps.rankdata(np.asarray(rows, dtype=float), method="average", axis=1).sum(axis=0)
    tie_sum = 0.0
    for row in rows:
        counts: dict[float, int] = {}
        for v in row:
            counts[v] = counts.get(v, 0) + 1
        tie_sum += sum(t**3 - t for t in counts.values())
    mean_total = m * (n + 1) / 2.0
    s = math.fsum((float(t) - mean_total) ** 2 for t in totals)
    denom = m**2 * (n**3 - n) - m * tie_sum
    if denom <= 0:
        return None
    return 12.0 * s / denom


def host_mean_ranks(
    ranks: Mapping[Cell, Mapping[str, int]], conditions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """host -> condition -> mean of that host's per-cell ranks."""
    by_host: dict[str, list[Cell]] = {}
    for cell in ranks:
        by_host.setdefault(cell.host, []).append(cell)
    return {
        host: {cid: sum(ranks[c][cid] for c in cells) / len(cells) for cid in conditions}
        for host, cells in by_host.items()
    }


def _correlation(fn: Callable[..., object], a: list[float], b: list[float]) -> float | None:
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = fn(a, b)
    value = float(result.statistic)  # type: ignore[attr-defined]
    return value if math.isfinite(value) else None


def host_agreement(
    ranks: Mapping[Cell, Mapping[str, int]], conditions: Sequence[str]
) -> list[HostPair]:
    """Kendall tau and Spearman rho between each pair of hosts' mean rankings."""
    from scipy import stats as sps

    means = host_mean_ranks(ranks, conditions)
    pairs = []
    for a, b in combinations(sorted(means, key=lambda h: list(means).index(h)), 2):
        va = [means[a][c] for c in conditions]
        vb = [means[b][c] for c in conditions]
        pairs.append(
            HostPair(
                a, b, _correlation(sps.kendalltau, va, vb), _correlation(sps.spearmanr, va, vb)
            )
        )
    return pairs


@dataclass(frozen=True)
class LeaveOneOut:
    cell: Cell
    selected: tuple[str, ...]
    changed: bool

    def to_dict(self) -> JsonObject:
        return {
            "host": self.cell.host,
            "seed": self.cell.seed,
            "selected": list(self.selected),
            "changed": self.changed,
        }


# Leaving one cell out recomputes the whole gate, so leaving out every cell is quadratic in
# cells. Up to LOO_WORK cell-recomputations every cell is left out (all of them up to 100
# cells); past that an evenly spaced subset (never fewer than LOO_MIN_CELLS), which keeps a
# 20,000-cell gate near-linear (issue 18). Each result names the cell it left out.
LOO_WORK = 10_000
LOO_MIN_CELLS = 5


def cells_to_leave_out(cells: Sequence[Cell]) -> list[Cell]:
    n = len(cells)
    k = min(n, max(LOO_MIN_CELLS, LOO_WORK // max(n, 1)))
    if k >= n:
        return list(cells)
    return [cells[(i * n) // k] for i in range(k)]


def leave_one_cell_out(
    cells: Sequence[Cell],
    selected: Sequence[str],
    recompute: Callable[[Cell], Sequence[str]],
) -> list[LeaveOneOut]:
    """For each cell (or an even subset of many, see LOO_WORK), the selection recomputed
    without it, and whether it differs."""
    full = set(selected)
    out = []
    for cell in cells_to_leave_out(cells):
        again = tuple(recompute(cell))
        out.append(LeaveOneOut(cell, again, set(again) != full))
    return out
