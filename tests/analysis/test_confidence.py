"""The blocked bootstrap: draws keep hosts as blocks; intervals cover a known truth."""

from __future__ import annotations

import numpy as np
import pytest

from stagewise.analysis.cells import Cell
from stagewise.analysis.confidence import (
    BootstrapDesign,
    condition_intervals,
    draw,
    replicate_maxima,
    replicate_means,
)


def _cells(hosts: int, seeds: int) -> list[Cell]:
    return [Cell("s", seed, f"h{h}") for h in range(hosts) for seed in range(seeds)]


def test_draws_stay_within_the_drawn_host() -> None:
    design = BootstrapDesign.from_cells([*_cells(2, 3), Cell("s", 9, "h2")])
    assert design.counts == (3, 3, 1) and design.offsets == (0, 3, 6)
    d = draw(design, 200, np.random.default_rng(0))
    host_of = np.array([design.hosts.index(c.host) for c in design.cells])
    for b in range(d.replicates):
        for h in range(len(design.hosts)):
            real = d.index[b, h][d.mask[b, h]]
            # every position of a drawn block comes from one host, and the block has its size
            assert len(set(host_of[real])) == 1
            assert len(real) == design.counts[host_of[real[0]]]


def test_means_and_maxima_by_hand() -> None:
    design = BootstrapDesign.from_cells(_cells(2, 2))
    d = draw(design, 50, np.random.default_rng(1))
    values = np.array([1.0, 2.0, 3.0, 4.0])
    for b, (m, mx) in enumerate(
        zip(replicate_means(values, d), replicate_maxima(values, d), strict=True)
    ):
        picked = [values[i] for _, _, i in d.positions(b)]
        assert m == pytest.approx(np.mean(picked))
        assert mx == max(picked)


def test_one_seed_per_host_is_stated() -> None:
    design = BootstrapDesign.from_cells(_cells(2, 1))
    assert not design.seeds_vary
    assert any("one seed per host" in n for n in design.notes())
    assert BootstrapDesign.from_cells(_cells(1, 3)).notes()[0].startswith("one host block")


def test_same_seed_same_intervals() -> None:
    design = BootstrapDesign.from_cells(_cells(2, 2))
    vals = {"a": dict(zip(design.cells, [1.0, 1.1, 1.3, 1.2], strict=True))}
    vals["r"] = dict(zip(design.cells, [1.05, 1.0, 1.2, 1.25], strict=True))
    one = condition_intervals(design, vals, ["a"], "r", draw(design, 300, np.random.default_rng(7)))
    two = condition_intervals(design, vals, ["a"], "r", draw(design, 300, np.random.default_rng(7)))
    assert one == two
    assert set(one["a"]) == {"mean", "mean_gap", "max_gap"}
    assert one["a"]["mean_gap"].lo <= one["a"]["mean_gap"].estimate <= one["a"]["mean_gap"].hi


def test_interval_of_the_mean_gap_covers_the_truth_about_90_percent() -> None:
    """1,000 simulated gates with known truth (6 hosts x 4 seeds, host and seed scatter)."""
    rng = np.random.default_rng(2024)
    gates, hosts, seeds, true_gap = 1000, 6, 4, 0.01
    design = BootstrapDesign.from_cells(_cells(hosts, seeds))
    host_effect = rng.normal(0.0, 0.004, size=(gates, hosts, 1))
    seed_noise = rng.normal(0.0, 0.006, size=(gates, hosts, seeds))
    gaps = (true_gap + host_effect + seed_noise).reshape(gates, hosts * seeds)
    boot = replicate_means(gaps, draw(design, 1000, np.random.default_rng(5)))  # [gates, B]
    lo, hi = np.quantile(boot, [0.05, 0.95], axis=1)
    coverage = float(np.mean((lo <= true_gap) & (true_gap <= hi)))
    assert 0.85 <= coverage <= 0.95, coverage
