"""Variance of the gaps to the reference at a gate, with hosts as blocks (pure).

A condition's gap in one host-seed cell is modelled as

    gap[h, s] = mu + b[h] + e[h, s],   b ~ N(0, var_host),   e ~ N(0, var_seed)

where b is the condition-by-host effect (a host block's composite of hardware, software stack and
data order that more seeds on the same host never average away) and e the seed-to-seed scatter
within a host. The components come from the one-way random-effects ANOVA (method of moments), per
condition and pooled over the gate's conditions; the pooled values feed seed planning.

With one seed per host the within-host component is not estimable (zero degrees of freedom) and
the host component absorbs both; with one host the host component is not estimable. Both cases are
reported as None with their zero degrees of freedom rather than as a misleading number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class VarianceComponents:
    """Method-of-moments components of one set of gaps (one condition, or pooled)."""

    n_hosts: int
    n_cells: int
    var_host: float | None  # condition-by-host component (clipped at 0)
    var_seed: float | None  # within-host (seed) component
    df_host: int
    df_seed: int
    ms_host: float | None
    ms_seed: float | None
    seeds_per_host: float  # n0: the effective seeds per host of an unbalanced layout

    def var_of_mean(self, hosts: int, seeds_per_host: int) -> float | None:
        """Variance of a mean gap over `hosts` new blocks with `seeds_per_host` seeds in each."""
        if self.var_host is None or self.var_seed is None or hosts < 1 or seeds_per_host < 1:
            return None
        return self.var_host / hosts + self.var_seed / (hosts * seeds_per_host)

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "n_hosts": self.n_hosts,
            "n_cells": self.n_cells,
            "var_host": self.var_host,
            "var_seed": self.var_seed,
            "sd_host": None if self.var_host is None else math.sqrt(self.var_host),
            "sd_seed": None if self.var_seed is None else math.sqrt(self.var_seed),
            "df_host": self.df_host,
            "df_seed": self.df_seed,
            "seeds_per_host": self.seeds_per_host,
        }


def _groups(gaps: Mapping[str, Sequence[float]]) -> list[list[float]]:
    return [list(v) for v in gaps.values() if len(v) > 0]


def _sums(groups: Sequence[Sequence[float]]) -> tuple[float, float, int, int, float]:
    """(SS between hosts, SS within hosts, df between, df within, n0) of one condition."""
    n_total = sum(len(g) for g in groups)
    grand = math.fsum(v for g in groups for v in g) / n_total
    means = [math.fsum(g) / len(g) for g in groups]
    ss_between = math.fsum(len(g) * (m - grand) ** 2 for g, m in zip(groups, means, strict=True))
    ss_within = math.fsum((v - m) ** 2 for g, m in zip(groups, means, strict=True) for v in g)
    k = len(groups)
    n0 = (
        (n_total - math.fsum(len(g) ** 2 for g in groups) / n_total) / (k - 1)
        if k > 1
        else float(n_total)
    )
    return ss_between, ss_within, k - 1, n_total - k, n0


def _components(
    ss_between: float, ss_within: float, df_b: int, df_w: int, n0: float, n_hosts: int, n: int
) -> VarianceComponents:
    ms_b = ss_between / df_b if df_b > 0 else None
    ms_w = ss_within / df_w if df_w > 0 else None
    var_seed = ms_w
    var_host: float | None
    if ms_b is None:
        var_host = None
    elif ms_w is None:
        # One seed per host: the host mean square holds host and seed scatter together.
        var_host = ms_b
    else:
        var_host = max(0.0, (ms_b - ms_w) / n0)
    return VarianceComponents(n_hosts, n, var_host, var_seed, df_b, df_w, ms_b, ms_w, n0)


def decompose(gaps_by_host: Mapping[str, Sequence[float]]) -> VarianceComponents:
    """Components of one condition's gaps, grouped by host block."""
    groups = _groups(gaps_by_host)
    if not groups:
        return VarianceComponents(0, 0, None, None, 0, 0, None, None, 0.0)
    ss_b, ss_w, df_b, df_w, n0 = _sums(groups)
    return _components(ss_b, ss_w, df_b, df_w, n0, len(groups), sum(len(g) for g in groups))


def decompose_pooled(
    per_condition: Mapping[str, Mapping[str, Sequence[float]]],
) -> VarianceComponents:
    """Components pooled over conditions: sums of squares and degrees of freedom add up.

    Each condition keeps its own mean and host means, so a condition that is simply worse adds
    nothing; what is pooled is how much gaps move between hosts and between seeds.
    """
    ss_b = ss_w = 0.0
    df_b = df_w = 0
    weighted_n0 = 0.0
    hosts: set[str] = set()
    n = 0
    for gaps_by_host in per_condition.values():
        groups = _groups(gaps_by_host)
        if not groups:
            continue
        b, w, db, dw, n0 = _sums(groups)
        ss_b, ss_w, df_b, df_w = ss_b + b, ss_w + w, df_b + db, df_w + dw
        weighted_n0 += n0 * db
        hosts.update(h for h, v in gaps_by_host.items() if len(v) > 0)
        n += sum(len(g) for g in groups)
    if n == 0:
        return VarianceComponents(0, 0, None, None, 0, 0, None, None, 0.0)
    n0 = weighted_n0 / df_b if df_b > 0 else float(n)
    return _components(ss_b, ss_w, df_b, df_w, n0, len(hosts), n)
