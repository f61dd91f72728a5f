"""Blocked bootstrap over host-seed cells: hosts are blocks, seeds are resampled within hosts (pure).

A replicate draws as many host blocks as the gate has, with replacement, and within each drawn
block as many of its cells as it holds, with replacement. Every statistic of a replicate is then
computed on the drawn cells as if they were a fresh gate, so a replicate's "cells" are positions
(`b0/s1`: drawn block 0, draw 1) rather than the original labels, which may repeat.

This is descriptive: it asks how the gate's numbers would move under other seeds and other blocks
like the observed ones. With one cell per host, seeds cannot vary within a block and only the host
resampling remains (stated by `BootstrapDesign.notes`); with one host, nothing varies between
blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from stagewise.analysis.cells import Cell

DEFAULT_CONFIDENCE = 0.90
DEFAULT_REPLICATES = 2000


@dataclass(frozen=True)
class BootstrapDesign:
    """Cells grouped by host block, in a fixed order (the flat order of the value arrays)."""

    hosts: tuple[str, ...]
    cells: tuple[Cell, ...]  # grouped by host, hosts in `hosts` order
    offsets: tuple[int, ...]  # first flat index of each host's cells
    counts: tuple[int, ...]  # cells per host

    @classmethod
    def from_cells(cls, cells: Sequence[Cell]) -> BootstrapDesign:
        by_host: dict[str, list[Cell]] = {}
        for cell in sorted(cells):
            by_host.setdefault(cell.host, []).append(cell)
        hosts = tuple(sorted(by_host))
        flat = tuple(c for h in hosts for c in by_host[h])
        counts = tuple(len(by_host[h]) for h in hosts)
        offsets = tuple(int(x) for x in np.cumsum((0, *counts[:-1])))
        return cls(hosts, flat, offsets, counts)

    @property
    def seeds_vary(self) -> bool:
        return any(n > 1 for n in self.counts)

    @property
    def hosts_vary(self) -> bool:
        return len(self.hosts) > 1

    def notes(self) -> tuple[str, ...]:
        out = []
        if not self.seeds_vary:
            out.append(
                "one seed per host: seed-to-seed scatter within a host cannot be estimated; "
                "intervals reflect only the resampling of host blocks"
            )
        if not self.hosts_vary:
            out.append(
                "one host block: the condition-by-host effect cannot be estimated; intervals "
                "reflect only seeds on this host"
            )
        return tuple(out)


@dataclass(frozen=True)
class Draws:
    """`replicates` resamplings of a design: flat cell indices and which positions are real."""

    index: NDArray[np.int64]  # [B, H, nmax] flat cell index of each drawn position
    mask: NDArray[np.bool_]  # [B, H, nmax] whether the position exists (blocks differ in size)

    @property
    def replicates(self) -> int:
        return int(self.index.shape[0])

    def positions(self, b: int) -> list[tuple[int, int, int]]:
        """(drawn block, draw within it, flat cell index) of replicate b's real positions."""
        out = []
        for h in range(self.index.shape[1]):
            for s in range(self.index.shape[2]):
                if self.mask[b, h, s]:
                    out.append((h, s, int(self.index[b, h, s])))
        return out


def draw(design: BootstrapDesign, replicates: int, rng: np.random.Generator) -> Draws:
    """Hosts with replacement, then each drawn host's cells with replacement (vectorised)."""
    n_hosts = len(design.hosts)
    counts = np.asarray(design.counts, dtype=np.int64)
    offsets = np.asarray(design.offsets, dtype=np.int64)
    nmax = int(counts.max()) if n_hosts else 0
    host = rng.integers(0, n_hosts, size=(replicates, n_hosts))
    n_drawn = counts[host]  # [B, H]
    u = rng.random((replicates, n_hosts, nmax))
    within = np.floor(u * n_drawn[..., None]).astype(np.int64)
    index = offsets[host][..., None] + within
    mask = np.arange(nmax)[None, None, :] < n_drawn[..., None]
    return Draws(index, mask)


def replicate_means(values: NDArray[np.float64], draws: Draws) -> NDArray[np.float64]:
    """Mean over each replicate's drawn cells: values [..., N] -> [..., B]."""
    picked = values[..., draws.index]  # [..., B, H, nmax]
    w = draws.mask.astype(np.float64)
    out: NDArray[np.float64] = (picked * w).sum(axis=(-1, -2)) / w.sum(axis=(-1, -2))
    return out


def replicate_maxima(values: NDArray[np.float64], draws: Draws) -> NDArray[np.float64]:
    """Max over each replicate's drawn cells: values [..., N] -> [..., B]."""
    picked = np.where(draws.mask, values[..., draws.index], -np.inf)
    out: NDArray[np.float64] = picked.max(axis=(-1, -2))
    return out


def percentile_interval(
    samples: NDArray[np.float64], confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Equal-tailed percentile interval of bootstrap samples."""
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


@dataclass(frozen=True)
class Interval:
    """A statistic's observed value and its bootstrap interval."""

    estimate: float
    lo: float
    hi: float

    def to_json(self) -> list[float]:
        return [self.lo, self.hi]


def value_matrix(
    design: BootstrapDesign, values: Mapping[str, Mapping[Cell, float]], conditions: Sequence[str]
) -> NDArray[np.float64]:
    """[conditions, cells] in the design's flat order (every condition complete in every cell)."""
    return np.array(
        [[values[cid][cell] for cell in design.cells] for cid in conditions], dtype=float
    )


def condition_intervals(
    design: BootstrapDesign,
    values: Mapping[str, Mapping[Cell, float]],
    conditions: Sequence[str],
    reference: str | None,
    draws: Draws,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, dict[str, Interval]]:
    """Per condition: intervals of the mean and, with a complete reference, of the mean and max gap.

    The gap is taken cell by cell before resampling, so a replicate keeps each cell's pairing with
    the reference run of the same host and seed.
    """
    v = value_matrix(design, values, conditions)
    means = replicate_means(v, draws)
    out: dict[str, dict[str, Interval]] = {}
    ref = None
    if (
        reference is not None
        and reference in values
        and all(c in values[reference] for c in design.cells)
    ):
        ref = np.array([values[reference][c] for c in design.cells], dtype=float)
    for i, cid in enumerate(conditions):
        row = {"mean": Interval(float(v[i].mean()), *percentile_interval(means[i], confidence))}
        if ref is not None:
            gap = v[i] - ref
            row["mean_gap"] = Interval(
                float(gap.mean()), *percentile_interval(replicate_means(gap, draws), confidence)
            )
            row["max_gap"] = Interval(
                float(gap.max()), *percentile_interval(replicate_maxima(gap, draws), confidence)
            )
        out[cid] = row
    return out
