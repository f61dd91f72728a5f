"""Replays: which cells (seeds and hosts, or runs) each budget level uses, for many replays.

Per replay and level, `cells_per_level[l]` cells are drawn. In a paired table a cell is a
seed-host pair that holds every condition; in an unpaired table each condition draws its own
runs, independently. Cells go round-robin over hosts from a host drawn at random per replay
(so the default, one cell per host, is one seed per host), and each host walks through its own
random permutation of seeds (runs).

- `separate_runs` (one run per budget): the walk continues where the previous level stopped,
  so levels get **distinct seeds** while the table has enough of them (as the paper did).
- `within_run` (levels are prefixes of one run): every level takes the first cells of the same
  walk, so a replay **follows the same run** across levels. A run that stopped early (censored)
  has no value at the later levels: the drawn value is missing there, and `missing` says so
  (a policy that needs it makes the replay "unknown").

Everything is NumPy over the replay axis; one Generator seeded from `--seed` makes it
deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stagewise.backtest.table import CurvesError, CurvesTable

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class LevelDraw:
    """The cells one level uses in every replay.

    values[r, c, j]: the value of condition c in the j-th drawn cell of replay r (a missing,
    censored value is filled with one worse than any in the table; `missing[r, c]` marks it);
    hosts, seeds: indices of that cell's host and seed (slot), [r, j] for a paired table and
    [r, c, j] for an unpaired one.
    """

    budget: float
    values: FloatArray
    hosts: IntArray
    seeds: IntArray
    missing: BoolArray | None = None

    @property
    def budget_seconds(self) -> float:
        return self.budget

    @property
    def n_cells(self) -> int:
        return int(self.values.shape[2])

    @property
    def means(self) -> FloatArray:
        return np.asarray(self.values.mean(axis=2), dtype=np.float64)


@dataclass(frozen=True)
class Draws:
    table: CurvesTable
    replays: int
    levels: tuple[LevelDraw, ...]
    seed: int
    within_run: bool = False
    distinct: int = 0  # distinct draws of cells among the replays

    @property
    def budgets(self) -> tuple[float, ...]:
        return self.table.budgets

    @property
    def cells(self) -> tuple[int, ...]:
        return tuple(lv.n_cells for lv in self.levels)


def _hosts_with_cells(table: CurvesTable, li: int) -> int:
    avail = table.levels[li].available  # [c', h, m]
    return max(1, int(avail.any(axis=2).sum(axis=1).min()))


def default_cells(table: CurvesTable, *, within_run: bool | None = None) -> tuple[int, ...]:
    """One cell per host at every level but the last, every usable cell at the last.

    Under `within_run` one cell per host at every level: the runs a replay follows.
    """
    if within_run is None:
        within_run = table.curve_kind == "within_run"
    n = len(table.levels)
    if within_run:
        return tuple(min(_hosts_with_cells(table, 0), table.levels[li].n_cells) for li in range(n))
    return tuple(
        table.levels[li].n_cells if li == n - 1 else _hosts_with_cells(table, li) for li in range(n)
    )


def parse_cells(text: str, table: CurvesTable) -> tuple[int, ...]:
    """`1,1,2,4,all` -> cells per level, checked against the table."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(table.levels):
        raise CurvesError(
            f"--cells-per-level: {len(parts)} value(s) for {len(table.levels)} budget levels "
            f"({', '.join(table.format_budget(b) for b in table.budgets)}), but got {text!r}"
        )
    out = []
    for part, level in zip(parts, table.levels, strict=True):
        if part == "all":
            out.append(level.n_cells)
            continue
        try:
            n = int(part)
        except ValueError:
            raise CurvesError(
                f"--cells-per-level: expected integers or 'all', but got {part!r}"
            ) from None
        if not 1 <= n <= level.n_cells:
            raise CurvesError(
                f"--cells-per-level: level {table.format_budget(level.budget)} has "
                f"{level.n_cells} usable cell(s); expected 1..{level.n_cells}, but got {n}"
            )
        out.append(n)
    return tuple(out)


def _walk_keys(
    avail: BoolArray, seed_keys: FloatArray, used: IntArray, start: IntArray, paired: bool
) -> FloatArray:
    """order_key[r, c', h, m]: lower = drawn earlier (inf: not available)."""
    n_hosts = avail.shape[1]
    per_host = avail.sum(axis=2)  # [c', h]
    keys = np.where(avail[None], seed_keys, 2.0)
    rank = np.argsort(np.argsort(keys, axis=3), axis=3)
    count = np.maximum(per_host, 1)[None, :, :, None]
    pos = (rank - used[:, :, :, None]) % count
    if paired:
        live_hosts = np.flatnonzero(per_host[0] > 0)
        n_live = len(live_hosts)
        host_pos = np.zeros(n_hosts, dtype=np.int64)
        host_pos[live_hosts] = np.arange(n_live)
    else:
        n_live = n_hosts
        host_pos = np.arange(n_hosts, dtype=np.int64)
    rot = (host_pos[None, :] - start[:, None]) % n_live  # [r, h]
    order_key = (pos * n_live + rot[:, None, :, None]).astype(np.float64)
    order_key[:, ~avail] = np.inf
    return np.asarray(order_key, dtype=np.float64)


def draw(
    table: CurvesTable,
    replays: int,
    cells: Sequence[int] | None = None,
    *,
    seed: int = 0,
    within_run: bool | None = None,
) -> Draws:
    if replays < 1:
        raise CurvesError(f"--replays must be >= 1, but got {replays}")
    if within_run is None:
        within_run = table.curve_kind == "within_run"
    cells = tuple(cells) if cells is not None else default_cells(table, within_run=within_run)
    rng = np.random.default_rng(seed)
    first = table.levels[0]
    n_c = len(table.conditions)
    groups = 1 if table.paired else n_c
    _, n_hosts, n_slots = first.values.shape
    seed_keys = rng.random((replays, groups, n_hosts, n_slots))
    used = np.zeros((replays, groups, n_hosts), dtype=np.int64)  # seeds each host has used
    every = np.stack([lv.values for lv in table.levels])
    worst, best = float(np.nanmax(every)), float(np.nanmin(every))
    spread = worst - best
    fill = worst + 10.0 * (spread + 1.0)  # worse than anything: a censored run never leads
    fixed: FloatArray | None = None
    if within_run:
        # One walk for every level: the runs that exist at the first level.
        start = rng.integers(0, _live(first.available, table.paired), replays)
        fixed = _walk_keys(first.available, seed_keys, used, start, table.paired)
    rows = np.arange(replays)
    picked = []
    out = []
    for _li, (level, k) in enumerate(zip(table.levels, cells, strict=True)):
        if fixed is None:
            avail = level.available
            start = rng.integers(0, _live(avail, table.paired), replays)
            order_key = _walk_keys(avail, seed_keys, used, start, table.paired)
        else:
            order_key = fixed
        flat = order_key.reshape(replays, groups, n_hosts * n_slots)
        chosen = np.argsort(flat, axis=2, kind="stable")[:, :, :k]  # [r, c', k]
        h_idx, s_idx = np.divmod(chosen, n_slots)
        grid = level.values.reshape(n_c, n_hosts * n_slots)
        if table.paired:
            values = grid[:, chosen[:, 0, :]].transpose(1, 0, 2)
            hosts, seeds = h_idx[:, 0, :], s_idx[:, 0, :]
        else:
            values = np.take_along_axis(
                np.broadcast_to(grid, (replays, n_c, grid.shape[1])), chosen, axis=2
            )
            hosts, seeds = h_idx, s_idx
        missing: BoolArray = np.asarray(np.isnan(values).any(axis=2), dtype=bool)
        if missing.any():
            values = np.where(np.isnan(values), fill, values)
        out.append(
            LevelDraw(
                budget=level.budget,
                values=np.ascontiguousarray(values, dtype=np.float64),
                hosts=hosts.astype(np.int64),
                seeds=seeds.astype(np.int64),
                missing=missing if missing.any() else None,
            )
        )
        picked.append(np.sort(chosen, axis=2).reshape(replays, -1))
        if fixed is None:
            for g in range(groups):
                np.add.at(used[:, g, :], (rows[:, None], h_idx[:, g, :]), 1)
    distinct = len(np.unique(np.concatenate(picked, axis=1), axis=0))
    return Draws(table, replays, tuple(out), seed, within_run, distinct)


def _live(avail: BoolArray, paired: bool) -> int:
    if paired:
        return max(1, int((avail[0].sum(axis=1) > 0).sum()))
    return int(avail.shape[1])


__all__ = ["Draws", "LevelDraw", "default_cells", "draw", "parse_cells"]
