"""Replays: which host-seed cells each budget level uses, drawn for many replays at once.

Per replay and level, `cells_per_level[l]` cells are drawn from the cells that hold every
condition at that level. They go round-robin over hosts from a host drawn at random per replay
(so the default, one cell per host, is one seed per host), and each host walks through its own
random permutation of seeds, continuing where the previous level stopped: levels get distinct
seeds while the table has enough of them (as the paper did), then the walk wraps around.
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


@dataclass(frozen=True)
class LevelDraw:
    """The cells one level uses in every replay.

    values[r, c, j]: val_bpb of condition c in the j-th drawn cell of replay r;
    hosts[r, j], seeds[r, j]: indices into the table's hosts and seeds of that cell.
    """

    budget_seconds: float
    values: FloatArray
    hosts: IntArray
    seeds: IntArray

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

    @property
    def budgets(self) -> tuple[float, ...]:
        return self.table.budgets

    @property
    def cells(self) -> tuple[int, ...]:
        return tuple(lv.n_cells for lv in self.levels)


def default_cells(table: CurvesTable) -> tuple[int, ...]:
    """One cell per host at every level but the last, every usable cell at the last."""
    out = []
    for i, level in enumerate(table.levels):
        if i == len(table.levels) - 1:
            out.append(level.n_cells)
        else:
            out.append(int(level.complete.any(axis=1).sum()))
    return tuple(out)


def parse_cells(text: str, table: CurvesTable) -> tuple[int, ...]:
    """`1,1,2,4,all` -> cells per level, checked against the table."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != len(table.levels):
        raise CurvesError(
            f"--cells-per-level: {len(parts)} value(s) for {len(table.levels)} budget levels "
            f"({', '.join(f'{b:g}s' for b in table.budgets)}), but got {text!r}"
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
                f"--cells-per-level: level {level.budget_seconds:g}s has {level.n_cells} usable "
                f"cell(s); expected 1..{level.n_cells}, but got {n}"
            )
        out.append(n)
    return tuple(out)


def draw(
    table: CurvesTable, replays: int, cells: Sequence[int] | None = None, *, seed: int = 0
) -> Draws:
    if replays < 1:
        raise CurvesError(f"--replays must be >= 1, but got {replays}")
    cells = tuple(cells) if cells is not None else default_cells(table)
    rng = np.random.default_rng(seed)
    n_hosts, n_seeds = len(table.hosts), len(table.seeds)
    seed_keys = rng.random((replays, n_hosts, n_seeds))
    used = np.zeros((replays, n_hosts), dtype=np.int64)  # seeds each host has used so far
    out = []
    for level, k in zip(table.levels, cells, strict=True):
        avail = level.complete  # [h, s]
        per_host = avail.sum(axis=1)
        live_hosts = np.flatnonzero(per_host > 0)
        # Position of each available seed in this replay's walk through its host's seeds.
        keys = np.where(avail[None], seed_keys, 2.0)
        rank = np.argsort(np.argsort(keys, axis=2), axis=2)
        count = np.maximum(per_host, 1)[None, :, None]
        pos = (rank - used[:, :, None]) % count
        # Host order: round-robin from a host drawn per replay.
        start = rng.integers(0, len(live_hosts), replays)
        host_pos = np.full(n_hosts, 0, dtype=np.int64)
        host_pos[live_hosts] = np.arange(len(live_hosts))
        rot = (host_pos[None, :] - start[:, None]) % len(live_hosts)
        order_key = (pos * len(live_hosts) + rot[:, :, None]).astype(np.float64)
        order_key[:, ~avail] = np.inf
        flat = order_key.reshape(replays, n_hosts * n_seeds)
        chosen = np.argsort(flat, axis=1, kind="stable")[:, :k]
        h_idx, s_idx = np.divmod(chosen, n_seeds)
        values = level.values.reshape(len(table.conditions), n_hosts * n_seeds)[:, chosen]
        out.append(
            LevelDraw(
                budget_seconds=level.budget_seconds,
                values=np.ascontiguousarray(values.transpose(1, 0, 2)),
                hosts=h_idx.astype(np.int64),
                seeds=s_idx.astype(np.int64),
            )
        )
        np.add.at(used, (np.arange(replays)[:, None], h_idx), 1)
    return Draws(table, replays, tuple(out), seed)


__all__ = ["Draws", "LevelDraw", "default_cells", "draw", "parse_cells"]
