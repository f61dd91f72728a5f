"""How many seeds per host (and hosts) a gate needs for its frozen threshold to be decided (pure).

Given the variance components observed at an earlier gate (`variance.VarianceComponents`) and how
far the observed gap lies from the threshold, the normal approximation asks for

    (z_conf + z_power) * sd(mean gap) <= |threshold - observed gap|,
    sd(mean gap)^2 = var_host / hosts + var_seed / (hosts * seeds_per_host)

so seeds help only down to the host floor var_host / hosts: when that floor alone is too wide,
no number of seeds suffices with these hosts and the answer is "more hosts". z_conf is two-sided,
matching the equal-tailed intervals of `confidence`. Each answer is checked by simulating gates
from the same random-effects model. A max-over-cells rule has no closed form (more cells raise the
expected maximum), so it is planned by simulation alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from stagewise.analysis.variance import VarianceComponents

MAX_SEEDS_PER_HOST = 64  # beyond this a plan is not a plan: report it as not achievable
MAX_HOSTS = 32
SIMULATIONS = 4000


@dataclass(frozen=True)
class SeedAdvice:
    statistic: str  # "mean_gap" or "max_gap"
    threshold: float
    observed_gap: float
    sigma_d: float | None  # sd of one cell's gap: sqrt(var_host + var_seed)
    hosts: int
    seeds_per_host: int | None  # None when not achievable
    min_hosts: int | None  # fewest hosts that would make it achievable (<= MAX_HOSTS)
    achievable: bool
    simulated_power: float | None
    note: str

    @classmethod
    def undecided(
        cls,
        statistic: str,
        threshold: float,
        gap: float,
        sigma_d: float | None,
        hosts: int,
        note: str,
    ) -> SeedAdvice:
        """No seed count decides the rule with these hosts (or nothing could be estimated)."""
        return cls(statistic, threshold, gap, sigma_d, hosts, None, None, False, None, note)

    def to_json(self) -> dict[str, object]:
        return {
            "statistic": self.statistic,
            "threshold": self.threshold,
            "observed_gap": self.observed_gap,
            "sigma_d": self.sigma_d,
            "seeds_per_host": self.seeds_per_host,
            "hosts": self.hosts,
            "min_hosts": self.min_hosts,
            "achievable": self.achievable,
            "simulated_power": self.simulated_power,
            "note": self.note,
        }


def _z(confidence: float, power: float) -> float:
    nd = NormalDist()
    return nd.inv_cdf(1.0 - (1.0 - confidence) / 2.0) + nd.inv_cdf(power)


def _components(vc: VarianceComponents) -> tuple[float, float] | None:
    if vc.var_seed is None and vc.var_host is None:
        return None
    # A component that cannot be estimated is planned as zero and said so in the note.
    return (vc.var_host or 0.0), (vc.var_seed or 0.0)


def _seeds_needed(
    var_host: float, var_seed: float, hosts: int, delta: float, z: float
) -> int | None:
    budget = (delta / z) ** 2 - var_host / hosts
    if budget <= 0:
        return None
    if var_seed == 0:
        return 1
    n = math.ceil(var_seed / (hosts * budget) - 1e-12)
    return max(1, n) if n <= MAX_SEEDS_PER_HOST else None


def _simulated_gaps(
    gap: float, var_host: float, var_seed: float, hosts: int, seeds: int, rng: np.random.Generator
) -> np.ndarray:
    """SIMULATIONS gates' cell gaps [S, hosts, seeds] from the random-effects model."""
    b = rng.normal(0.0, math.sqrt(var_host), size=(SIMULATIONS, hosts, 1))
    e = rng.normal(0.0, math.sqrt(var_seed), size=(SIMULATIONS, hosts, seeds))
    return gap + b + e


def _simulate_mean_power(
    gap: float,
    t: float,
    var_host: float,
    var_seed: float,
    hosts: int,
    seeds: int,
    confidence: float,
    rng: np.random.Generator,
) -> float:
    """Share of simulated gates whose interval for the mean gap lies wholly on the observed side."""
    means = _simulated_gaps(gap, var_host, var_seed, hosts, seeds, rng).mean(axis=(1, 2))
    se = math.sqrt(var_host / hosts + var_seed / (hosts * seeds))
    zc = NormalDist().inv_cdf(1.0 - (1.0 - confidence) / 2.0)
    if gap <= t:
        return float(np.mean(means + zc * se <= t))
    return float(np.mean(means - zc * se > t))


def plan_mean_gap(
    observed_gap: float,
    threshold: float,
    vc: VarianceComponents,
    hosts: int,
    confidence: float = 0.9,
    power: float = 0.9,
    seed: int = 0,
) -> SeedAdvice:
    comps = _components(vc)
    delta = abs(threshold - observed_gap)
    if comps is None:
        return SeedAdvice.undecided(
            "mean_gap",
            threshold,
            observed_gap,
            None,
            hosts,
            "no variance could be estimated at the earlier gate",
        )
    var_host, var_seed = comps
    sigma_d = math.sqrt(var_host + var_seed)
    note = _note(vc)
    if delta == 0:
        return SeedAdvice.undecided(
            "mean_gap",
            threshold,
            observed_gap,
            sigma_d,
            hosts,
            "the observed gap equals the threshold: no sample size decides it",
        )
    z = _z(confidence, power)
    n = _seeds_needed(var_host, var_seed, hosts, delta, z)
    min_hosts = next(
        (h for h in range(1, MAX_HOSTS + 1) if _seeds_needed(var_host, var_seed, h, delta, z)),
        None,
    )
    sim = None
    if n is not None:
        rng = np.random.default_rng(seed)
        sim = _simulate_mean_power(
            observed_gap, threshold, var_host, var_seed, hosts, n, confidence, rng
        )
    return SeedAdvice(
        "mean_gap", threshold, observed_gap, sigma_d, hosts, n, min_hosts, n is not None, sim, note
    )


def _max_power(
    gap: float,
    t: float,
    var_host: float,
    var_seed: float,
    hosts: int,
    seeds: int,
    rng: np.random.Generator,
    passes: bool,
) -> float:
    """Probability that the simulated max over cells gives the verdict `passes`."""
    maxima = _simulated_gaps(gap, var_host, var_seed, hosts, seeds, rng).max(axis=(1, 2))
    return float(np.mean(maxima <= t)) if passes else float(np.mean(maxima > t))


def plan_max_gap(
    observed_gap: float,
    threshold: float,
    vc: VarianceComponents,
    hosts: int,
    power: float = 0.9,
    seed: int = 0,
    observed_max: float | None = None,
) -> SeedAdvice:
    """Seeds per host with which a max-over-cells rule returns the observed verdict with `power`.

    `observed_gap` is the condition's mean gap: the centre around which cells' gaps are simulated.
    `observed_max` is the largest cell gap actually seen; when given, it (not the centre) says
    which verdict was observed, so a condition whose mean is within the threshold but whose worst
    cell is not is planned as the failure it was. A passing verdict gets harder with more cells,
    a failing one easier: the search returns the seeds per host at which the simulated
    probability first reaches `power`, trying 1 to MAX_SEEDS_PER_HOST.
    """
    passes = (observed_max if observed_max is not None else observed_gap) <= threshold
    comps = _components(vc)
    if comps is None:
        return SeedAdvice.undecided(
            "max_gap",
            threshold,
            observed_gap,
            None,
            hosts,
            "no variance could be estimated at the earlier gate",
        )
    var_host, var_seed = comps
    sigma_d = math.sqrt(var_host + var_seed)
    rng = np.random.default_rng(seed)
    best: tuple[int, float] | None = None
    for n in range(1, MAX_SEEDS_PER_HOST + 1):
        p = _max_power(observed_gap, threshold, var_host, var_seed, hosts, n, rng, passes)
        if p >= power:
            best = (n, p)
            break
        if passes and n >= 2:
            break  # more cells only lower the chance that every cell stays within
    note = _note(vc)
    if passes:
        note = (note + "; " if note else "") + "a max-over-cells pass gets harder with more cells"
    if best is None:
        return SeedAdvice.undecided("max_gap", threshold, observed_gap, sigma_d, hosts, note)
    return SeedAdvice(
        "max_gap", threshold, observed_gap, sigma_d, hosts, best[0], hosts, True, best[1], note
    )


def p_correct_selection(
    means: dict[str, float],
    vc: VarianceComponents,
    hosts: int,
    seeds_per_host: int,
    seed: int = 0,
) -> float | None:
    """Probability that the condition with the best (lowest) true mean has the best observed mean.

    Each condition gets its own host effects and seed noise from the pooled components (the
    condition-by-host effect is what makes hosts blocks).
    """
    comps = _components(vc)
    if comps is None or len(means) < 2:
        return None
    var_host, var_seed = comps
    rng = np.random.default_rng(seed)
    ids = sorted(means)
    mu = np.array([means[c] for c in ids])[None, :, None, None]
    shape = (SIMULATIONS, len(ids), hosts, seeds_per_host)
    b = rng.normal(0.0, math.sqrt(var_host), size=(*shape[:3], 1))
    e = rng.normal(0.0, math.sqrt(var_seed), size=shape)
    observed = (mu + b + e).mean(axis=(2, 3))
    best = int(np.argmin([means[c] for c in ids]))
    return float(np.mean(np.argmin(observed, axis=1) == best))


def _note(vc: VarianceComponents) -> str:
    parts = []
    if vc.var_seed is None:
        parts.append("seed component not estimable (one seed per host): planned as 0")
    if vc.var_host is None:
        parts.append("host component not estimable (one host): planned as 0")
    return "; ".join(parts)
