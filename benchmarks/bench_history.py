"""Back-test speed at the issue-31 scale: the default policy set and `--recommend`.

The table is the shape of a real public tracker history: 18 conditions x 7 step levels x 4
independent runs each (unpaired, within_run, like an import of `val_loss` from MLflow). Three
timings, all in this process:

1. the default policy set (every policy, Optuna's pruners decided natively) at 10,000 replays;
2. Optuna's own pruners through ask/tell (the reference the native verdicts equal) on a few
   replays, scaled to 1,000, for the ratio;
3. `recommend` over the protocol space at 1,000 replays (the number of candidates is printed).

    python benchmarks/bench_history.py [--replays 10000] [--optuna-replays 40] [--figure PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from stagewise.backtest.draw import draw as draw_cells
from stagewise.backtest.policies import default_policies, parse_policies
from stagewise.backtest.policies.base import ReplayContext
from stagewise.backtest.recommend import recommend
from stagewise.backtest.replay import backtest
from stagewise.backtest.table import CurveRow, CurvesTable, build_table


def history_table(seed: int = 0) -> CurvesTable:
    """18 conditions x 7 levels x 4 runs with their own ids: curves that cross, with noise."""
    rng = np.random.default_rng(seed)
    steps = [250.0 * 2**i for i in range(7)]
    rows = []
    for c in range(18):
        final = 3.0 + 0.05 * rng.random()
        early = final + 1.0 + 0.08 * rng.standard_normal()
        alpha = 0.4 + 0.3 * rng.random()
        for _run in range(4):
            run_id = f"{rng.integers(0, 2**32):08x}"
            for s in steps:
                value = final + (early - final) * (s / steps[0]) ** -alpha
                rows.append(
                    CurveRow(
                        f"opt{c:02d}",
                        s,
                        run_id,
                        "host",
                        float(value + 0.01 * rng.standard_normal()),
                        curve_kind="within_run",
                    )
                )
    return build_table(rows, "history", unit="steps", metric="val_loss")


def draw(path: str, bars: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 3.8), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    names = list(bars)
    values = [bars[n] for n in names]
    ax.bar(names, values, color=["#0072B2", "#D55E00", "#009E73", "#CC79A7"])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f} s", ha="center", va="bottom", fontsize=8)
    ax.axhline(60, color="#999999", linestyle=":", linewidth=1)
    ax.text(len(names) - 0.5, 61, "60 s goal", ha="right", va="bottom", fontsize=7)
    ax.set_ylabel("wall seconds (2-core VM, shared)")
    ax.set_title("Back-test at the history scale: 18 conditions x 7 levels x 4 runs", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replays", type=int, default=10000)
    parser.add_argument("--optuna-replays", type=int, default=40)
    parser.add_argument("--recommend-replays", type=int, default=1000)
    parser.add_argument("--json", type=str, default="")
    parser.add_argument("--figure", type=str, default="", help="write a bar chart (PNG) here")
    args = parser.parse_args()
    table = history_table()
    names = default_policies(with_study=False, with_optuna=True)
    policies = parse_policies(names)
    print(
        f"table: {len(table.conditions)} conditions x {len(table.levels)} levels x 4 runs, "
        f"{'paired' if table.paired else 'unpaired'} {table.curve_kind}; "
        f"{len(policies)} policies"
    )
    wall, cpu = time.perf_counter(), time.process_time()
    result = backtest(table, policies, replays=args.replays, seed=0)
    t_default = (time.perf_counter() - wall, time.process_time() - cpu)
    print(
        f"default set, {args.replays} replays: {t_default[0]:.1f} s wall, {t_default[1]:.1f} s "
        f"CPU ({result.cost_model} cost, {result.distinct_draws} distinct draws)"
    )
    d = draw_cells(table, args.optuna_replays, seed=0)
    ctx = ReplayContext(d, 0)
    (wil,) = parse_policies("optuna-wilcoxon")
    wall = time.perf_counter()
    wil.run(ctx)
    native = time.perf_counter() - wall
    wall = time.perf_counter()
    reference = wil.reference_runs(ctx)
    ref = time.perf_counter() - wall
    same = all((a == b).all() for a, b in zip(wil.run(ctx), reference, strict=True))
    per_1000_ref = ref / args.optuna_replays * 1000
    per_1000_native = native / args.optuna_replays * 1000
    print(
        f"optuna-wilcoxon per 1,000 replays: Optuna's own pruner {per_1000_ref:.1f} s, native "
        f"{per_1000_native:.2f} s ({per_1000_ref / max(per_1000_native, 1e-9):.0f}x); "
        f"verdicts equal on {args.optuna_replays} replays: {same}"
    )
    wall, cpu = time.perf_counter(), time.process_time()
    rec = recommend(table, target=0.9, replays=args.recommend_replays, seed=0)
    t_rec = (time.perf_counter() - wall, time.process_time() - cpu)
    print(
        f"recommend: {rec.candidates} candidate protocols x {rec.replays} replays in "
        f"{t_rec[0]:.1f} s wall, {t_rec[1]:.1f} s CPU; found: {rec.best is not None}"
    )
    if args.figure:
        draw(
            args.figure,
            {
                f"default set\n{args.replays:,} replays": t_default[0],
                "optuna-wilcoxon\nOptuna's pruner\n(per 1,000)": per_1000_ref,
                "optuna-wilcoxon\nnative\n(per 1,000)": per_1000_native,
                f"--recommend\n{rec.candidates:,} protocols\nx {rec.replays:,}": t_rec[0],
            },
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "default_set_seconds": t_default[0],
                    "default_set_cpu_seconds": t_default[1],
                    "replays": args.replays,
                    "wilcoxon_reference_per_1000": per_1000_ref,
                    "wilcoxon_native_per_1000": per_1000_native,
                    "recommend_seconds": t_rec[0],
                    "recommend_candidates": rec.candidates,
                    "recommend_replays": rec.replays,
                },
                handle,
                indent=2,
            )


if __name__ == "__main__":
    main()
