"""Ranks within host-seed cells: 1 = lowest val_bpb, ties share the lowest rank ('min')."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from stagewise.analysis.cells import Cell


def rank_min(values: Mapping[str, float]) -> dict[str, int]:
    """Competition ranking: 1 + the number of strictly lower values (ties share the lowest)."""
    ordered = sorted(values.values())
    ranks = {}
    for key, value in values.items():
        lower = 0
        for v in ordered:
            if v < value:
                lower += 1
            else:
                break
        ranks[key] = 1 + lower
    return ranks


def cell_ranks(
    cells: Sequence[Cell], values: Mapping[str, Mapping[Cell, float]], conditions: Sequence[str]
) -> dict[Cell, dict[str, int]]:
    """Per cell, the rank of each listed condition among the listed conditions."""
    return {cell: rank_min({cid: values[cid][cell] for cid in conditions}) for cell in cells}


@dataclass(frozen=True)
class RankSummary:
    mean_rank: float
    best_rank: int
    worst_rank: int
    first_rank_cells: int


def summarise_ranks(
    ranks: Mapping[Cell, Mapping[str, int]], condition_id: str
) -> RankSummary | None:
    per_cell = [r[condition_id] for r in ranks.values() if condition_id in r]
    if not per_cell:
        return None
    return RankSummary(
        mean_rank=sum(per_cell) / len(per_cell),
        best_rank=min(per_cell),
        worst_rank=max(per_cell),
        first_rank_cells=sum(1 for r in per_cell if r == 1),
    )
