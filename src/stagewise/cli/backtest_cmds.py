"""`stagewise curves` (ground truth for back-tests) and `stagewise backtest` (replay policies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stagewise.cli.common import SeedAlias, console, emit_json, err_console, open_study

EXIT_INTERRUPTED = 130
EXIT_FAILED = 1


def curves(
    folder: Annotated[
        Path | None,
        typer.Argument(help="Study folder: run its full matrix at every budget level."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the table (.csv or .parquet).")
    ] = None,
    budgets: Annotated[
        str | None, typer.Option(help="Budget levels, e.g. 10s,20s,40s,80s,160s.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Seeds, e.g. 1,2,3,4.")] = None,
    hosts: Annotated[
        str | None,
        typer.Option(help="Host blocks to run on (default: every local/Ray host of the study)."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="At most this many runs at once.")] = None,
    retries: Annotated[int, typer.Option(help="Retries of a run that failed transiently.")] = 0,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Also rerun runs recorded as failed before.")
    ] = False,
    from_study: Annotated[
        Path | None,
        typer.Option(
            "--from-study", help="Write the table from a study's ledger, running nothing."
        ),
    ] = None,
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Generate parametric curves (see docs/backtest.md).")
    ] = False,
    conditions: Annotated[int, typer.Option(help="--synthetic: number of conditions.")] = 12,
    flip: Annotated[
        float, typer.Option(help="--synthetic: 0 = early order is final order, 1 = reversed.")
    ] = 0.5,
    spread: Annotated[float, typer.Option(help="--synthetic: final val_bpb spread.")] = 0.05,
    early_gap: Annotated[
        float, typer.Option(help="--synthetic: how much worse the shortest budget is.")
    ] = 0.5,
    alpha: Annotated[float, typer.Option(help="--synthetic: power-law decay exponent.")] = 0.5,
    seed_noise: Annotated[float, typer.Option(help="--synthetic: per-cell noise (sd).")] = 0.005,
    host_noise: Annotated[float, typer.Option(help="--synthetic: host effect (sd).")] = 0.005,
    seed: Annotated[int, typer.Option("--generator-seed", help="--synthetic: generator seed.")] = 0,
    seed_alias: SeedAlias = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write a ground-truth table: condition_id, budget_seconds, seed, host, val_bpb (+ extras).

    `curves DIR --budgets ... --seeds ...` runs the full factorial with the real runner through
    the study's executors, recorded in its ledger under reserved stages `curves-<budget>`;
    rerunning the same command resumes after a kill. `--from-study DIR` writes what the ledger
    holds; `--synthetic` generates parametric curves with crossings and noise."""
    from stagewise.backtest.collect import parse_budgets, parse_seeds
    from stagewise.backtest.table import CurvesError, build_table, write_curves

    seed = seed if seed_alias is None else seed_alias

    modes = sum(x for x in (folder is not None, from_study is not None, synthetic))
    if modes != 1:
        raise CurvesError(
            "curves: give exactly one source: a study folder, --from-study DIR or --synthetic"
        )
    if out is None:
        raise CurvesError("curves: --out is required (a .csv or .parquet path)")
    summary: dict[str, Any] = {}
    status_exit = 0
    if synthetic:
        from stagewise.backtest.synthetic import SyntheticSpec, synthetic_rows

        spec = SyntheticSpec(
            conditions=conditions,
            budgets=parse_budgets(budgets) if budgets else SyntheticSpec.budgets,
            seeds=parse_seeds(seeds) if seeds else SyntheticSpec.seeds,
            hosts=tuple(h.strip() for h in hosts.split(",")) if hosts else SyntheticSpec.hosts,
            flip=flip,
            spread=spread,
            early_gap=early_gap,
            alpha=alpha,
            seed_noise=seed_noise,
            host_noise=host_noise,
            seed=seed,
        )
        rows = synthetic_rows(spec)
        summary["synthetic"] = spec.to_json()
    elif from_study is not None:
        from stagewise.backtest.collect import rows_from_ledger

        with open_study(from_study) as (study, ledger):
            rows, skipped = rows_from_ledger(study, ledger)
        summary["skipped"] = skipped
    else:
        assert folder is not None
        if budgets is None or seeds is None:
            raise CurvesError("curves DIR: --budgets and --seeds are required")
        from stagewise.backtest.collect import rows_from_ledger, run_curves
        from stagewise.cli.progress import PlainReporter
        from stagewise.executors.stage import NullReporter, Reporter

        levels = parse_budgets(budgets)
        seed_list = parse_seeds(seeds)
        host_list = [h.strip() for h in hosts.split(",")] if hosts else None
        reporter: Reporter = NullReporter() if as_json else PlainReporter(err_console)
        with open_study(folder, start=True) as (study, ledger):
            states = run_curves(
                study,
                ledger,
                levels,
                seed_list,
                host_list,
                workers=workers,
                retries=retries,
                retry_failed=retry_failed,
                reporter=reporter,
                notify=lambda m: err_console.print(m, markup=False, soft_wrap=True),
            )
            rows, skipped = rows_from_ledger(study, ledger, only_reserved=True)
            ran_on = set(
                host_list or (h for h, v in study.hosts.items() if v.executor != "external")
            )
            # Only this invocation's factorial: earlier `curves` runs on other levels, seeds
            # or hosts stay in the ledger but not in this table.
            rows = [
                r
                for r in rows
                if r.budget_seconds in levels and r.seed in seed_list and r.host in ran_on
            ]
        summary["stages"] = [
            {
                "stage": s.stage,
                "total": s.total,
                "succeeded_now": len(s.done),
                "already_finished": len(s.already_done),
                "failed": len(s.failed) + len(s.previously_failed),
                "stopped_by": s.stopped,
            }
            for s in states
        ]
        if any(s.stopped for s in states):
            status_exit = EXIT_INTERRUPTED
        elif any(s.failed or s.previously_failed for s in states):
            status_exit = EXIT_FAILED
    if status_exit == EXIT_INTERRUPTED:
        err_console.print("interrupted: rerun the same command to resume", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED)
    table = build_table(rows, str(out))
    write_curves(rows, out)
    summary = {"out": str(out), "rows": len(rows), **table.describe(), **summary}
    if as_json:
        emit_json(summary)
    else:
        console.print(
            f"wrote {out}: {len(rows)} rows, {len(table.conditions)} conditions x "
            f"{len(table.budgets)} levels ({', '.join(f'{b:g}s' for b in table.budgets)}), "
            f"cells per level {[lv.n_cells for lv in table.levels]}",
            markup=False,
            soft_wrap=True,
        )
    if status_exit:
        failed = sum(s["failed"] for s in summary.get("stages", []))
        err_console.print(
            f"{failed} run(s) failed; the table holds the cells that succeeded (each failed "
            "run's cause is in the ledger: `stagewise status`; rerun with --retry-failed)",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(status_exit)


def backtest(
    curves_file: Annotated[Path, typer.Argument(help="Curves table (.csv or .parquet).")],
    study_dir: Annotated[
        Path | None,
        typer.Option("--study", help="Study whose frozen gates the `study` policy replays."),
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option(
            help="Policies, e.g. final_only,sh:eta=3,top_k:k=2 (default: all; Optuna's if "
            "installed; `study` with --study)."
        ),
    ] = None,
    replays: Annotated[int, typer.Option(help="Resamples of seeds and hosts.")] = 1000,
    seed: Annotated[int, typer.Option("--replay-seed", help="Random seed of the replays.")] = 0,
    seed_alias: SeedAlias = None,
    cells_per_level: Annotated[
        str | None,
        typer.Option(
            help="Cells each level uses, e.g. 2,2,2,4,all (default: one per host, all at the end)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for backtest.json, policies.csv, pareto.csv/png "
            "(default with --study: STUDY/backtest)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Replay promotion policies on a curves table: p_retain, p_select, regret and GPU-hours.

    Every policy runs on the same draw of seeds and hosts per replay; intervals are 95% over
    replays. Deterministic for a given --replay-seed."""
    seed = seed if seed_alias is None else seed_alias
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stagewise.backtest.draw import parse_cells
    from stagewise.backtest.output import RESULT_DIR, write_result
    from stagewise.backtest.policies import (
        INSTALL,
        default_policies,
        optuna_available,
        parse_policies,
    )
    from stagewise.backtest.replay import backtest as run_backtest
    from stagewise.backtest.table import read_curves

    table = read_curves(curves_file)
    study = None
    if study_dir is not None:
        from stagewise.study import load_study

        study = load_study(study_dir)
    has_optuna = optuna_available()
    chosen = parse_policies(
        policies or default_policies(with_study=study is not None, with_optuna=has_optuna)
    )
    skipped = []
    runnable = []
    for policy in chosen:
        if getattr(policy, "needs_optuna", False) and not has_optuna:
            skipped.append({"policy": policy.label, "reason": f"needs Optuna: {INSTALL}"})
            err_console.print(f"skipped {policy.label}: needs Optuna ({INSTALL})", markup=False)
            continue
        if policy.needs_study and study is None:
            from stagewise.backtest.table import CurvesError

            raise CurvesError(f"--policies: {policy.name} needs --study DIR")
        runnable.append(policy)
    cells = parse_cells(cells_per_level, table) if cells_per_level else None
    progress = Progress(
        TextColumn("replays"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json or not err_console.is_terminal,
        transient=True,
    )
    with progress:
        task = progress.add_task("replays", total=replays * max(1, len(runnable)))
        result = run_backtest(
            table,
            runnable,
            replays=replays,
            seed=seed,
            cells=cells,
            study=study,
            progress=lambda n: progress.advance(task, n),
        )
    if skipped:
        import dataclasses

        result = dataclasses.replace(result, skipped=tuple(skipped))
    if out is None and study_dir is not None:
        out = study_dir / RESULT_DIR
    written = write_result(result, out) if out is not None else []
    if as_json:
        emit_json(result.to_json())
        return
    _print_table(result)
    for path in written:
        console.print(f"wrote {path}", markup=False)


def _print_table(result: Any) -> None:
    from rich.table import Table

    truth = result.truth
    console.print(
        f"truth: {truth.condition_id} (mean val_bpb {truth.mean_val_bpb:.6f} at "
        f"{truth.final_budget_seconds:g}s); {result.replays} replays, seed {result.seed}, "
        f"cells per level {list(result.cells_per_level)}; final_only costs "
        f"{result.final_only_gpu_hours:.4g} GPU-h",
        markup=False,
        soft_wrap=True,
    )
    grid = Table(show_edge=False, header_style="bold", box=None, pad_edge=False)
    for name in ("policy", "p_retain", "95%", "p_select", "regret", "GPU-h", "x final"):
        grid.add_column(name, justify="left" if name == "policy" else "right", no_wrap=True)
    for p in result.policies:
        lo, hi = p.p_retain_interval.low, p.p_retain_interval.high
        grid.add_row(
            p.label,
            f"{p.p_retain:.3f}",
            f"{lo:.2f}-{hi:.2f}",
            f"{p.p_select:.3f}",
            f"{p.mean_regret:.4f}",
            f"{p.gpu_hours:.4g}",
            f"{p.cost_vs_final_only:.3f}",
        )
    console.print(grid)


def register(app: typer.Typer) -> None:
    app.command("curves")(curves)
    app.command("backtest")(backtest)
