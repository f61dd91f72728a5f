"""A parametric ground truth for scale tests: learning curves that cross, with host and seed noise.

Each condition c has a long-horizon value a_c = 1 + spread * q_c (q_c = its final quality rank
scaled to [0, 1], 0 = best) and a value at the shortest budget
    e_c = a_c + early_gap + spread * flip * (1 - 2 q_c) + jitter_c   (jitter ~ N(0, spread / 2C)),
so the early values have slope spread * (1 - 2 flip) in q: with `flip = 0` the early order is
the final order, at 0.5 it is unrelated to it, and at 1 it is reversed (the best at the end
starts worst, like a large model or a low learning rate). In between,
    val(c, B) = a_c + (e_c - a_c) * (B / B_min) ** -alpha
plus a host offset, a condition-by-host interaction and per-cell seed noise (all Gaussian).
Deterministic for a given `seed`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from stagewise.backtest.table import CurveRow, CurvesError


@dataclass(frozen=True)
class SyntheticSpec:
    conditions: int = 12
    budgets: tuple[float, ...] = (60.0, 180.0, 540.0, 1620.0, 4860.0, 14580.0)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    hosts: tuple[str, ...] = ("host1", "host2")
    flip: float = 0.5
    spread: float = 0.05
    early_gap: float = 0.5
    alpha: float = 0.5
    seed_noise: float = 0.005
    host_noise: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("conditions", self.conditions >= 2, "an integer >= 2"),
            ("seeds", len(self.seeds) >= 1, "at least one seed"),
            ("hosts", len(self.hosts) >= 1, "at least one host"),
            (
                "budgets",
                len(self.budgets) >= 2 and min(self.budgets) > 0,
                "at least 2 positive levels",
            ),
            ("flip", 0.0 <= self.flip <= 1.0, "a number in [0, 1]"),
            ("spread", self.spread > 0, "a positive number"),
            ("early_gap", self.early_gap >= 0, "a number >= 0"),
            ("alpha", self.alpha > 0, "a positive number"),
            ("seed_noise", self.seed_noise >= 0, "a number >= 0"),
            ("host_noise", self.host_noise >= 0, "a number >= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise CurvesError(
                    f"--synthetic: {name} must be {expected}, but got {getattr(self, name)!r}"
                )

    def to_json(self) -> dict[str, object]:
        return {
            **asdict(self),
            "budgets": list(self.budgets),
            "seeds": list(self.seeds),
            "hosts": list(self.hosts),
        }


def synthetic_rows(spec: SyntheticSpec) -> list[CurveRow]:
    rng = np.random.default_rng(spec.seed)
    n = spec.conditions
    quality = rng.permutation(n) / max(1, n - 1)  # 0 = best at the long horizon
    final = 1.0 + spread_term(spec, quality)
    early = (
        final
        + spec.early_gap
        + spec.spread * spec.flip * (1.0 - 2.0 * quality)
        + rng.normal(0.0, spec.spread / (2 * n), n)
    )
    budgets = np.asarray(sorted(spec.budgets), dtype=np.float64)
    shape = (budgets / budgets[0]) ** -spec.alpha  # 1 at the shortest budget, -> 0 later
    host_offset = rng.normal(0.0, spec.host_noise, len(spec.hosts))
    interaction = rng.normal(0.0, spec.host_noise / 2, (n, len(spec.hosts)))
    rows = []
    for li, budget in enumerate(budgets):
        for c in range(n):
            mean = final[c] + (early[c] - final[c]) * shape[li]
            for h, host in enumerate(spec.hosts):
                for seed in spec.seeds:
                    value = (
                        mean + host_offset[h] + interaction[c, h] + rng.normal(0.0, spec.seed_noise)
                    )
                    rows.append(
                        CurveRow(
                            condition_id=f"syn{c:02d}",
                            budget=float(budget),
                            seed=seed,
                            host=host,
                            value=float(value),
                            label=f"q={quality[c]:.2f}",
                            role="variant",
                        )
                    )
    return rows


def spread_term(spec: SyntheticSpec, quality: np.ndarray) -> np.ndarray:
    return np.asarray(spec.spread * quality, dtype=np.float64)


__all__ = ["SyntheticSpec", "synthetic_rows"]
