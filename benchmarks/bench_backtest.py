"""Back-test speed: vectorised replays against a plain per-replay Python loop, same run.

The table is the issue's scale target: 12 conditions x 6 levels x 8 seeds x 2 hosts
(synthetic). Both sides run every non-Optuna policy (final_only, top_k k=1..3, sh eta=2,3,
hyperband, asha) on the same draws; the loop covers a subset of the replays and is scaled to
replays per second. The deterministic policies (final_only, top_k, sh) must agree exactly.

    .venv/bin/python benchmarks/bench_backtest.py
    .venv/bin/python benchmarks/bench_backtest.py --replays 10000 --loop-replays 300
"""

from __future__ import annotations

import argparse
import math
import random
import time

from stagewise.backtest.draw import Draws, draw
from stagewise.backtest.policies import parse_policies
from stagewise.backtest.replay import backtest, slice_draws
from stagewise.backtest.synthetic import SyntheticSpec, synthetic_rows
from stagewise.backtest.table import build_table

POLICIES = "final_only,top_k:k=1,top_k:k=2,top_k:k=3,sh:eta=2,sh:eta=3,hyperband:eta=3,asha:eta=3"


# ---------------------------------------------------------------------- the plain loop
def _order(means: list[float], alive: list[int], names: list[str]) -> list[int]:
    # one cell per host early: ties are all but impossible, so (mean, name) is the same order
    return sorted(alive, key=lambda c: (means[c], names[c]))


def _sh(
    means: list[list[float]],
    alive: list[int],
    eta: float,
    first: int,
    names: list[str],
    runs: list[list[int]],
) -> None:
    for li in range(first, len(means)):
        for c in alive:
            runs[li][c] += 1
        if li == len(means) - 1:
            break
        keep = max(1, math.floor(len(alive) / eta)) if alive else 0
        alive = _order(means[li], alive, names)[:keep]


def loop_policy(
    name: str,
    params: dict[str, float],
    means: list[list[float]],
    names: list[str],
    rnd: random.Random,
) -> list[list[int]]:
    n_lev, n = len(means), len(names)
    runs = [[0] * n for _ in range(n_lev)]
    everyone = list(range(n))
    if name == "final_only":
        runs[-1] = [1] * n
    elif name == "top_k":
        runs[0] = [1] * n
        for c in _order(means[0], everyone, names)[: int(params["k"])]:
            runs[-1][c] += 1
    elif name == "sh":
        _sh(means, everyone, params["eta"], 0, names, runs)
    elif name == "hyperband":
        eta, s_max = params["eta"], n_lev - 1
        for s in range(s_max, -1, -1):
            size = max(1, min(n, math.ceil(n * (s_max + 1) / (s + 1) * eta ** (s - s_max) - 1e-9)))
            _sh(means, rnd.sample(everyone, size), eta, s_max - s, names, runs)
    elif name == "asha":
        eta = params["eta"]
        arrivals = rnd.sample(everyone, n)
        done: list[list[int]] = [[] for _ in range(n_lev)]
        promoted: list[set[int]] = [set() for _ in range(n_lev)]
        while True:
            pick = None
            for li in range(n_lev - 2, -1, -1):
                top = _order(means[li], done[li], names)[: int(len(done[li]) // eta)]
                free = [c for c in top if c not in promoted[li]]
                if free:
                    pick = (free[0], li + 1)
                    promoted[li].add(free[0])
                    break
            if pick is None and arrivals:
                pick = (arrivals.pop(0), 0)
            if pick is None:
                break
            done[pick[1]].append(pick[0])
            runs[pick[1]][pick[0]] += 1
    return runs


def loop_backtest(
    d: Draws, policies: list[tuple[str, dict[str, float]]], replays: int
) -> dict[str, float]:
    """p_retain per policy label with a per-replay Python loop (lists, no NumPy inside)."""
    table = d.table
    names = list(table.conditions)
    truth = table.truth()
    rnd = random.Random(0)
    retained = {f"{n}:{p}": 0 for n, p in policies}
    levels = [lv.values.tolist() for lv in d.levels]
    for r in range(replays):
        means = [[sum(cells) / len(cells) for cells in lv[r]] for lv in levels]
        for name, params in policies:
            runs = loop_policy(name, params, means, names, rnd)
            retained[f"{name}:{params}"] += runs[-1][truth] > 0
    return {k: v / replays for k, v in retained.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--replays", type=int, default=10_000)
    ap.add_argument("--loop-replays", type=int, default=500)
    args = ap.parse_args()
    table = build_table(synthetic_rows(SyntheticSpec()), "synthetic")
    shape = f"{len(table.conditions)} conditions x {len(table.budgets)} levels x {len(table.seeds)} seeds x {len(table.hosts)} hosts"
    policies = parse_policies(POLICIES)

    t0, c0 = time.perf_counter(), time.process_time()
    d = draw(table, args.replays, seed=0)
    result = backtest(table, policies, draws=d, seed=0)
    vec, vec_cpu = time.perf_counter() - t0, time.process_time() - c0

    n_loop = min(args.loop_replays, args.replays)
    sub = slice_draws(d, 0, n_loop)
    spec = [(p.name, {k: float(v) for k, v in p.params.items()}) for p in policies]
    t0, c0 = time.perf_counter(), time.process_time()
    loop = loop_backtest(sub, spec, n_loop)
    loop_s, loop_cpu = time.perf_counter() - t0, time.process_time() - c0

    head = backtest(table, policies, draws=sub, seed=0)  # vectorised on the loop's replays
    for p, (name, params) in zip(head.policies, spec, strict=True):
        if name in ("final_only", "top_k", "sh"):
            assert math.isclose(p.p_retain, loop[f"{name}:{params}"]), (p.label, p.p_retain, loop)
    vec_rate, vec_cpu_rate = args.replays / vec, args.replays / vec_cpu
    loop_rate, loop_cpu_rate = n_loop / loop_s, n_loop / loop_cpu
    print(f"table: {shape}; {len(policies)} policies: {POLICIES}")
    print(
        f"vectorised: {args.replays} replays in {vec:.2f} s wall ({vec_cpu:.2f} s CPU) = "
        f"{vec_rate:,.0f} replays/s wall, {vec_cpu_rate:,.0f} per CPU-second (draws included)"
    )
    print(
        f"plain loop: {n_loop} replays in {loop_s:.2f} s wall ({loop_cpu:.2f} s CPU) = "
        f"{loop_rate:,.0f} replays/s wall, {loop_cpu_rate:,.0f} per CPU-second"
    )
    print(
        f"ratio: {vec_rate / loop_rate:.1f}x wall, {vec_cpu_rate / loop_cpu_rate:.1f}x CPU; "
        f"final_only/top_k/sh agree with the loop on {n_loop} replays"
    )
    print("p_retain:", ", ".join(f"{p.label} {p.p_retain:.3f}" for p in result.policies))


if __name__ == "__main__":
    main()
