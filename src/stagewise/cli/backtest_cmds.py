"""`stagewise curves` (ground truth for back-tests) and `stagewise backtest` (replay policies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from stagewise.cli.common import SeedAlias, console, emit_json, err_console, open_study
from stagewise.words import plural

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
    from_mlflow: Annotated[
        str | None,
        typer.Option("--from-mlflow", help="Import an MLflow history: the tracking URI."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="--from-mlflow: the experiment's name or id.")
    ] = None,
    from_tensorboard: Annotated[
        Path | None,
        typer.Option("--from-tensorboard", help="Import TensorBoard runs: one sub-folder each."),
    ] = None,
    name_pattern: Annotated[
        str | None,
        typer.Option(
            help="--from-tensorboard: REGEX with named groups read from each run folder's name."
        ),
    ] = None,
    from_wandb: Annotated[
        Path | None,
        typer.Option("--from-wandb", help="Import a W&B history export (CSV, JSONL, Parquet)."),
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Import: the logged key to use, e.g. val/loss.")
    ] = None,
    condition_keys: Annotated[
        str | None,
        typer.Option(help="Import: params/tags whose values name the condition, e.g. opt,lr."),
    ] = None,
    seed_key: Annotated[
        str | None, typer.Option(help="Import: param/tag holding the seed (default: run id).")
    ] = None,
    host_key: Annotated[
        str | None, typer.Option(help="Import: param/tag holding the host (default: one host).")
    ] = None,
    axis: Annotated[
        str, typer.Option(help="Import: budget axis: step, tokens or seconds (wall clock).")
    ] = "step",
    tokens_per_step: Annotated[
        str | None,
        typer.Option(help="Import, --axis tokens: tokens per step (a number or a param name)."),
    ] = None,
    levels: Annotated[
        str | None,
        typer.Option(
            help="Import: budget levels to keep, in the axis' unit (default: the steps every "
            "complete run logged, at most 8)."
        ),
    ] = None,
    budget_key: Annotated[
        str | None,
        typer.Option(
            help="Import: one run per budget (separate runs): the param holding its budget."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Write a ground-truth table: condition_id, budget_seconds, seed, host, val_bpb (+ extras).

    `curves DIR --budgets ... --seeds ...` runs the full factorial with the real runner through
    the study's executors, recorded in its ledger under reserved stages `curves-<budget>`;
    rerunning the same command resumes after a kill. `--from-study DIR` writes what the ledger
    holds; `--synthetic` generates parametric curves with crossings and noise;
    `--from-mlflow`, `--from-tensorboard` and `--from-wandb` import a tracker's history."""
    from stagewise.backtest.collect import parse_budgets, parse_seeds
    from stagewise.backtest.table import CurvesError, build_table, write_curves

    seed = seed if seed_alias is None else seed_alias

    trackers = (from_mlflow is not None, from_tensorboard is not None, from_wandb is not None)
    modes = sum(x for x in (folder is not None, from_study is not None, synthetic, *trackers))
    if modes != 1:
        raise CurvesError(
            "curves: give exactly one source: a study folder, --from-study DIR, --synthetic, "
            "--from-mlflow URI, --from-tensorboard DIR or --from-wandb PATH"
        )
    if out is None:
        raise CurvesError("curves: --out is required (a .csv or .parquet path)")
    summary: dict[str, Any] = {}
    status_exit = 0
    unit, metric_name = "seconds", "val_bpb"
    if any(trackers):
        from stagewise.backtest.trackers.history import ImportOptions, rows_from_histories

        if not metric:
            raise CurvesError(
                "curves --from-...: --metric is required (the logged key, e.g. val/loss)"
            )
        options = ImportOptions(
            metric=metric,
            condition_keys=tuple(k.strip() for k in (condition_keys or "").split(",") if k.strip()),
            seed_key=seed_key,
            host_key=host_key,
            axis=axis,
            tokens_per_step=tokens_per_step,
            levels=_parse_levels(levels),
            budget_key=budget_key,
        )
        if from_mlflow is not None:
            from stagewise.backtest.trackers.mlflow_source import read_mlflow

            if not experiment:
                raise CurvesError("--from-mlflow: --experiment NAME_OR_ID is required")
            histories = read_mlflow(from_mlflow, experiment, metric)
        elif from_tensorboard is not None:
            from stagewise.backtest.trackers.tensorboard_source import read_tensorboard

            histories = read_tensorboard(from_tensorboard, metric, name_pattern)
        else:
            from stagewise.backtest.trackers.wandb_source import read_wandb

            assert from_wandb is not None
            histories = read_wandb(from_wandb, metric)
        imported = rows_from_histories(histories, options)
        rows = imported.rows
        unit, metric_name = imported.unit, imported.metric
        summary.update(imported.summary())
        mapping = _write_mapping(out, imported.conditions, options.condition_keys)
        summary["conditions_file"] = str(mapping)
    elif synthetic:
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

        budget_levels = parse_budgets(budgets)
        seed_list = parse_seeds(seeds)
        host_list = [h.strip() for h in hosts.split(",")] if hosts else None
        reporter: Reporter = NullReporter() if as_json else PlainReporter(err_console)
        with open_study(folder, start=True) as (study, ledger):
            states = run_curves(
                study,
                ledger,
                budget_levels,
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
                if r.budget_seconds in budget_levels and r.seed in seed_list and r.host in ran_on
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
    table = build_table(rows, str(out), unit=unit, metric=metric_name)
    write_curves(rows, out, unit=unit, metric=metric_name)
    summary = {"out": str(out), "rows": len(rows), **table.describe(), **summary}
    if as_json:
        emit_json(summary)
    else:
        console.print(
            f"wrote {out}: {len(rows)} rows of {metric_name}, {len(table.conditions)} conditions "
            f"x {len(table.budgets)} levels "
            f"({', '.join(table.format_budget(b) for b in table.budgets)}), "
            f"{'paired' if table.paired else 'unpaired'} {table.curve_kind}, "
            f"cells per level {[lv.n_cells for lv in table.levels]}",
            markup=False,
            soft_wrap=True,
        )
        if "runs" in summary:
            console.print(
                f"{summary['runs']} runs read; {summary['replaced_points']} logged point(s) "
                f"replaced by a later value of the same step; {summary['censored_runs']} "
                f"censored run(s) kept and marked (censored_after); conditions named in "
                f"{summary['conditions_file']}",
                markup=False,
                soft_wrap=True,
            )
    if status_exit:
        failed = sum(s["failed"] for s in summary.get("stages", []))
        err_console.print(
            f"{plural(failed, 'run')} failed; the table holds the cells that succeeded (each failed "
            "run's cause is in the ledger: `stagewise status`; rerun with --retry-failed)",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(status_exit)


def _parse_levels(text: str | None) -> tuple[float, ...] | None:
    from stagewise.backtest.table import CurvesError

    if not text:
        return None
    try:
        values = tuple(sorted({float(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise CurvesError(
            f"--levels: expected numbers like 1000,2000,4000, but got {text!r}"
        ) from None
    if not values or values[0] <= 0:
        raise CurvesError(f"--levels: expected positive numbers, but got {text!r}")
    return values


def _write_mapping(out: Path, conditions: dict[str, dict[str, str]], keys: tuple[str, ...]) -> Path:
    """condition_id -> the key values it stands for, beside the table (`<stem>.conditions.csv`)."""
    import csv

    path = out.with_name(out.stem + ".conditions.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["condition_id", *keys])
        for cid in sorted(conditions):
            writer.writerow([cid, *(conditions[cid].get(k, "") for k in keys)])
    return path


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
            help="Cells each level uses, e.g. 2,2,2,4,all (default: one per host, all at the end;"
            " within_run: one per host at every level)."
        ),
    ] = None,
    cost: Annotated[
        str | None,
        typer.Option(
            "--cost",
            help="restart (every level a fresh run at its full budget) or continue (promotion "
            "continues the same run; only the increment is charged). Default: continue for "
            "within_run tables, restart otherwise.",
        ),
    ] = None,
    pairing: Annotated[
        str,
        typer.Option(
            help="auto (paired when every level has a cell holding every condition), paired, or "
            "unpaired (each condition's runs drawn independently, even if seed ids coincide)."
        ),
    ] = "auto",
    seconds_per_unit: Annotated[
        float | None,
        typer.Option(
            "--seconds-per-unit",
            help="Seconds per step or token: converts a steps/tokens table's cost to GPU-hours "
            "(default with --study: the study's measured throughput).",
        ),
    ] = None,
    recommend: Annotated[
        bool,
        typer.Option(
            "--recommend", help="Search the protocol space for the cheapest that keeps the best."
        ),
    ] = False,
    target_retain: Annotated[
        float, typer.Option(help="--recommend: lower 95% bound of p_retain to reach.")
    ] = 0.9,
    max_cost_ratio: Annotated[
        float | None, typer.Option(help="--recommend: at most this cost x final_only.")
    ] = None,
    out_study: Annotated[
        Path | None,
        typer.Option(help="--recommend: write the protocol as a study.toml fragment here."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for backtest.json, policies.csv, pareto.csv/png, decision_accuracy.png "
            "(default with --study: STUDY/backtest)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Replay promotion policies on a curves table: p_retain, p_select, regret and cost.

    Every policy runs on the same draw of seeds and hosts (or runs) per replay; intervals are
    95% over replays. Deterministic for a given --replay-seed. --recommend also designs the cheapest
    protocol whose p_retain lower bound reaches --target-retain and, with --out-study, writes
    it as [stages.*]/[gates.*] tables with its evidence."""
    import dataclasses

    seed = seed if seed_alias is None else seed_alias

    from stagewise.backtest.draw import parse_cells
    from stagewise.backtest.output import RESULT_DIR, write_result
    from stagewise.backtest.policies import (
        default_policies,
        parse_policies,
    )
    from stagewise.backtest.replay import backtest as run_backtest
    from stagewise.backtest.replay import hours_per_unit, resolve_cost_model
    from stagewise.backtest.table import CurvesError, read_curves

    if pairing not in ("auto", "paired", "unpaired"):
        raise CurvesError(f"--pairing: expected auto, paired or unpaired, but got {pairing!r}")
    table = read_curves(curves_file, pairing=None if pairing == "auto" else pairing)
    model = resolve_cost_model(table, cost)
    if seconds_per_unit is None and study_dir is not None and table.unit != "seconds":
        from stagewise.backtest.replay import measured_seconds_per_unit

        # The study's own measured throughput converts a steps/tokens table to GPU-hours.
        seconds_per_unit = measured_seconds_per_unit(study_dir, table.unit)
        if seconds_per_unit is not None:
            err_console.print(
                f"GPU-hours from the study's measured throughput: {seconds_per_unit:.4g} s per "
                f"{table.unit[:-1]}",
                markup=False,
            )
    per_unit = hours_per_unit(table, seconds_per_unit)
    if out_study is not None and not recommend:
        raise CurvesError("--out-study needs --recommend")
    study = None
    if study_dir is not None:
        from stagewise.study import load_study

        study = load_study(study_dir)
    # Optuna's pruners are decided natively: they run whether or not Optuna is installed.
    chosen = parse_policies(
        policies or default_policies(with_study=study is not None, with_optuna=True)
    )
    skipped = []
    runnable = []
    for policy in chosen:
        if policy.needs_study and study is None:
            raise CurvesError(f"--policies: {policy.name} needs --study DIR")
        reason = policy.unusable(len(table.levels))
        if reason is not None:
            if policies:  # asked for by name: refuse; in the default set: skip, and say so
                raise CurvesError(f"--policies: {reason}")
            skipped.append({"policy": policy.label, "reason": reason})
            continue
        runnable.append(policy)
    cells = parse_cells(cells_per_level, table) if cells_per_level else None
    for item in skipped:  # said once the request is known to be valid (errors stay one line)
        err_console.print(f"skipped {item['policy']}: {item['reason']}", markup=False)
    with ReplayProgress(replays * max(1, len(runnable)), quiet=False) as progress:
        result = run_backtest(
            table,
            runnable,
            replays=replays,
            seed=seed,
            cells=cells,
            study=study,
            progress=progress.advance,
            cost_model=model,
            seconds_per_unit=seconds_per_unit,
        )
    if skipped:
        result = dataclasses.replace(result, skipped=tuple(skipped))
    extra_points: list[dict[str, Any]] = []
    extra_json: dict[str, Any] = {}
    rec = None
    if recommend:
        from stagewise.backtest.recommend import recommend as design
        from stagewise.backtest.recommend import recommended_point, study_fragment

        err_console.print("searching the protocol space (--recommend)", markup=False)
        rec = design(
            table,
            target=target_retain,
            replays=replays,
            seed=seed,
            cost_model=model,
            max_cost_ratio=max_cost_ratio,
        )
        extra_json["recommendation"] = rec.to_json(table)
        point = recommended_point(rec, table, per_unit)
        if point is not None:
            extra_points.append(point)
        if out_study is not None and rec.best is not None:
            text = study_fragment(rec, table, curves_file, seed=seed)
            out_study.parent.mkdir(parents=True, exist_ok=True)
            out_study.write_text(text, encoding="utf-8")
            extra_json["recommendation"]["out_study"] = str(out_study)
    if out is None and study_dir is not None:
        out = study_dir / RESULT_DIR
    written = (
        write_result(result, out, extra_points=extra_points, extra_json=extra_json)
        if out is not None
        else []
    )
    for warning in result.warnings:
        err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
    if as_json:
        emit_json({**result.to_json(), **extra_json})
    else:
        _print_table(result)
        _print_evidence(result)
        if rec is not None:
            _print_recommendation(rec, table, out_study)
        for path in written:
            console.print(f"wrote {path}", markup=False)
    if rec is not None and rec.best is None and out_study is not None:
        err_console.print(
            f"no protocol reached p_retain >= {target_retain:g}: {out_study} was not written",
            markup=False,
        )
        raise typer.Exit(EXIT_FAILED)


class ReplayProgress:
    """A bar on a terminal; plain lines (every 10 s and at the end) when stderr is not one."""

    INTERVAL = 10.0

    def __init__(self, total: int, *, quiet: bool) -> None:
        import time

        self.total = total
        self.done = 0
        self.quiet = quiet
        self.start = self.last = time.monotonic()
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> ReplayProgress:
        if self.quiet:
            return self
        if err_console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self.bar = Progress(
                TextColumn("replays"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("replays", total=self.total)
        else:
            err_console.print(f"replays: 0/{self.total} (policies x replays)", markup=False)
        return self

    def advance(self, n: int) -> None:
        import time

        self.done += n
        if self.bar is not None:
            self.bar.advance(self.task, n)
            return
        now = time.monotonic()
        if not self.quiet and now - self.last >= self.INTERVAL:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        from stagewise.budget_units import format_eta

        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        err_console.print(
            f"replays: {self.done}/{self.total} ({100 * self.done / max(1, self.total):.0f}%), "
            f"{format_eta(elapsed)} elapsed, {format_eta(left)} left",
            markup=False,
        )

    def __exit__(self, *exc: object) -> None:
        import time

        if self.bar is not None:
            self.bar.__exit__(*exc)
        elif not self.quiet:
            self._line(time.monotonic())


def _fmt_cost(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.4g}"


def _print_table(result: Any) -> None:
    from rich.table import Table

    truth = result.truth
    unit = result.cost_unit
    final = (
        f"{truth.final_budget:g}s"
        if result.budget_unit == "seconds"
        else f"{truth.final_budget:g} {result.budget_unit}"
    )
    console.print(
        f"truth: {truth.condition_id} (mean {result.metric} {truth.mean_value:.6g} at "
        f"{final}); {result.replays} replays, seed {result.seed}, "
        f"{result.table.get('pairing')} {result.table.get('curve_kind')} table, "
        f"{result.distinct_draws} distinct draws, cells per level {list(result.cells_per_level)}; "
        f"cost model {result.cost_model}; final_only costs "
        f"{_fmt_cost(result.cost_of_final())} {unit}",
        markup=False,
        soft_wrap=True,
    )
    grid = Table(show_edge=False, header_style="bold", box=None, pad_edge=False)
    for name in ("policy", "p_retain", "95%", "p_select", "regret", unit, "x final", "unknown"):
        grid.add_column(name, justify="left" if name == "policy" else "right", no_wrap=True)
    for p in result.policies:
        lo, hi = p.p_retain_interval.low, p.p_retain_interval.high
        grid.add_row(
            p.label,
            f"{p.p_retain:.3f}",
            f"{lo:.2f}-{hi:.2f}",
            f"{p.p_select:.3f}",
            f"{p.mean_regret:.4g}",
            _fmt_cost(result.cost_of(p)),
            f"{p.cost_vs_final_only:.3f}",
            str(p.unknown),
        )
    console.print(grid)


def _print_evidence(result: Any) -> None:
    ev = result.evidence
    if not ev:
        return
    parts = []
    for row in ev["levels"]:
        budget = (
            f"{row['budget']:g}s"
            if result.budget_unit == "seconds"
            else f"{row['budget']:g} {result.budget_unit}"
        )
        parts.append(
            f"{budget}: decision accuracy {row['decision_accuracy']:.2f}, Spearman "
            f"{row['spearman']:.2f}, Kendall {row['kendall']:.2f} at "
            f"{row['compute_fraction']:.3f} x final-only compute"
        )
    console.print("evidence per level (vs the final level's order):", markup=False)
    for line in parts:
        console.print(f"  {line}", markup=False, soft_wrap=True)


def _print_recommendation(rec: Any, table: Any, out_study: Path | None) -> None:
    if rec.best is None:
        closest = rec.closest
        console.print(
            f"no protocol among {rec.candidates} reaches a lower 95% bound of p_retain >= "
            f"{rec.target:g}"
            + (f" at <= {rec.max_cost_ratio:g} x final_only" if rec.max_cost_ratio else "")
            + (
                f"; the closest: {closest.protocol.describe(table)} (p_retain "
                f"{closest.p_retain:.3f}, lower bound {closest.p_retain_low:.3f})"
                if closest is not None
                else ""
            ),
            markup=False,
            soft_wrap=True,
        )
        return
    b = rec.best
    console.print(
        f"recommended ({rec.candidates} candidate protocols, {rec.cost_model} cost): "
        f"{b.protocol.describe(table)}; p_retain {b.p_retain:.3f} "
        f"[{b.p_retain_low:.3f}, {b.p_retain_high:.3f}], p_select {b.p_select:.3f}, "
        f"cost {b.cost_ratio:.3f} x final_only"
        + (f"; wrote {out_study}" if out_study is not None else ""),
        markup=False,
        soft_wrap=True,
    )
    for i, r in enumerate(rec.runners_up, start=1):
        console.print(
            f"  runner-up {i}: {r.protocol.describe(table)}; p_retain {r.p_retain:.3f}, "
            f"cost {r.cost_ratio:.3f} x final_only",
            markup=False,
            soft_wrap=True,
        )


def register(app: typer.Typer) -> None:
    app.command("curves")(curves)
    app.command("backtest")(backtest)
