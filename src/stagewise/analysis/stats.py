"""Pooled statistics of a gate: means, sds, ranks, gaps to the best and to the reference.

Everything is an unrounded float (rounding happens only where a number is displayed); a
statistic that does not exist (an sd from one cell, a gap without the reference) is None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from stagewise.analysis.cells import Cell, Pool
from stagewise.analysis.ranks import cell_ranks, summarise_ranks


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def sample_sd(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n-1); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


def sum_or_none(values: Sequence[float | None]) -> float | None:
    """The sum when every value is known, else None (a partial sum would mislead)."""
    if not values or any(v is None for v in values):
        return None
    return math.fsum(v for v in values if v is not None)


@dataclass(frozen=True)
class ConditionNumbers:
    """The pooled numbers of one condition at a gate, declared once: the statistics here and
    the gate result (`gates.results.ConditionResult`) both carry them."""

    n_cells: int
    mean_val_bpb: float | None
    sd_val_bpb: float | None
    mean_rank: float | None
    best_rank: int | None
    worst_rank: int | None
    first_rank_cells: int | None
    gap_from_best: float | None
    mean_gap_to_reference: float | None
    max_gap_to_reference: float | None
    params_M: float | None
    tokens_M: float | None
    training_hours: float | None


@dataclass(frozen=True)
class ConditionStats(ConditionNumbers):
    condition_id: str
    complete: bool
    cell_gaps: dict[Cell, float]  # val_bpb - reference val_bpb, where both exist


@dataclass(frozen=True)
class PoolStats:
    pool: Pool
    reference: str
    ranks: dict[Cell, dict[str, int]]  # complete conditions only
    best_mean: float | None
    conditions: dict[str, ConditionStats]

    @property
    def cells(self) -> tuple[Cell, ...]:
        return self.pool.cells

    @property
    def complete(self) -> tuple[str, ...]:
        return self.pool.complete

    def reference_missing(self) -> tuple[Cell, ...]:
        """The cells in which the reference has no usable result."""
        have = self.pool.values(self.reference)
        return tuple(c for c in self.pool.cells if c not in have)


ParamsLookup = Callable[[str], float | None]


def pool_stats(pool: Pool, reference: str, params_of: ParamsLookup | None = None) -> PoolStats:
    """Statistics of every pooled condition; ranks and gap_from_best over complete ones only."""
    values = {cid: pool.values(cid) for cid in pool.conditions}
    ranks = cell_ranks(pool.cells, values, pool.complete)
    means = {cid: mean(list(values[cid].values())) for cid in pool.complete}
    best = min((m for m in means.values() if m is not None), default=None)
    ref_values = pool.values(reference)
    ref_complete = all(c in ref_values for c in pool.cells) and bool(pool.cells)
    out: dict[str, ConditionStats] = {}
    for cid in pool.conditions:
        vals = values[cid]
        series = [vals[c] for c in pool.cells if c in vals]
        complete = cid in pool.complete
        summary = summarise_ranks(ranks, cid) if complete else None
        m = mean(series)
        gaps = {c: vals[c] - ref_values[c] for c in pool.cells if c in vals and c in ref_values}
        both = complete and ref_complete
        obs = [pool.observations[cid][c] for c in pool.cells if c in pool.observations[cid]]
        params = next((o.num_params_M for o in obs if o.num_params_M is not None), None)
        if params is None and params_of is not None:
            params = params_of(cid)
        out[cid] = ConditionStats(
            condition_id=cid,
            complete=complete,
            n_cells=len(series),
            mean_val_bpb=m,
            sd_val_bpb=sample_sd(series),
            mean_rank=summary.mean_rank if summary else None,
            best_rank=summary.best_rank if summary else None,
            worst_rank=summary.worst_rank if summary else None,
            first_rank_cells=summary.first_rank_cells if summary else None,
            gap_from_best=(m - best) if complete and m is not None and best is not None else None,
            cell_gaps=gaps,
            mean_gap_to_reference=mean(list(gaps.values())) if both else None,
            max_gap_to_reference=max(gaps.values()) if both and gaps else None,
            params_M=params,
            tokens_M=sum_or_none([o.total_tokens_M for o in obs]),
            training_hours=sum_or_none(
                [None if o.training_seconds is None else o.training_seconds / 3600.0 for o in obs]
            ),
        )
    return PoolStats(pool, reference, ranks, best, out)
