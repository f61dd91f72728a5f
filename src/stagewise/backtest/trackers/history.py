"""From tracker runs to curves rows: the part every source shares.

A source yields `RunHistory` records: a run's id, its params (params, tags and hparams, as
text), its status, and every logged point of one metric (step, value, seconds since the run
started) in logging order. `rows_from_histories` then:

- names each run's condition from `--condition-keys` (values made a safe id; the mapping is
  returned so the CLI writes it beside the table), its seed from `--seed-key` (default: the run
  id, so each run is its own seed and the table is unpaired) and its host from `--host-key`
  (default: one host);
- keeps the **last** value per step (a resumed run logs some steps twice) and counts how many
  were replaced; runs with the same condition, seed and host (a resume logged as a new run) are
  merged the same way;
- marks a run **censored** when its last step is below the longest run's last step (pruned,
  crashed or killed by the original sweep): its rows carry `censored_after`, never dropped;
- puts every point on the budget axis (`step`, `tokens` = step x `--tokens-per-step`, or
  `seconds` since the run started) and takes a run's value at a level as its last value at or
  before the level, for a run that reached or passed it;
- the default levels: the steps every uncensored run logged (thinned to at most 8, about
  evenly spaced on a log scale, always keeping the last).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stagewise.backtest.table import CurveRow, CurvesError, Seed, seed_key
from stagewise.paths import ID_MAX_LENGTH, is_safe_id

AXES = {"step": "steps", "tokens": "tokens", "seconds": "seconds"}
MAX_DEFAULT_LEVELS = 8
DEFAULT_HOST = "host"


@dataclass(frozen=True)
class Point:
    step: float
    value: float
    elapsed: float | None = None  # seconds since the run started (wall clock)


@dataclass(frozen=True)
class RunHistory:
    run_id: str
    params: dict[str, str]
    points: tuple[Point, ...]  # in logging order (a later point for a step wins)
    status: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ImportOptions:
    metric: str
    condition_keys: tuple[str, ...] = ()
    seed_key: str | None = None
    host_key: str | None = None
    axis: str = "step"
    tokens_per_step: str | None = None  # a number, or the param that holds it
    levels: tuple[float, ...] | None = None
    budget_key: str | None = None  # one run per budget (separate runs): the param with it


@dataclass
class ImportResult:
    rows: list[CurveRow]
    unit: str
    metric: str
    curve_kind: str
    conditions: dict[str, dict[str, str]]  # condition_id -> its key values
    replaced: int = 0
    censored: list[str] = field(default_factory=list)  # run ids
    runs: int = 0
    skipped: list[str] = field(default_factory=list)  # why a run was left out

    def summary(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "replaced_points": self.replaced,
            "censored_runs": len(self.censored),
            "censored": list(self.censored),
            "skipped_runs": list(self.skipped),
            "curve_kind": self.curve_kind,
            "budget_unit": self.unit,
            "metric": self.metric,
        }


def safe_name(text: str) -> str:
    """A safe id for any text: other characters become '-', long ones keep a hash suffix."""
    if is_safe_id(text):
        return text
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    name = re.sub(r"\.{2,}", ".", name) or "x"
    if not name[0].isalnum():
        name = "x" + name
    if len(name) > ID_MAX_LENGTH or name != text:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        name = name[: ID_MAX_LENGTH - 9].rstrip("-._") + "-" + digest
    return name


def seed_id(text: str) -> Seed:
    """An integer seed stays an integer (so `1` in MLflow equals seed 1 of a study)."""
    text = text.strip()
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    return safe_name(text)


def _param(run: RunHistory, key: str, what: str) -> str:
    if key not in run.params:
        known = ", ".join(sorted(run.params)[:12]) or "none"
        raise CurvesError(
            f"{run.source}: run {run.run_id} has no param, tag or hparam {key!r} ({what}); "
            f"it has: {known}"
        )
    return run.params[key]


def _tokens_per_step(run: RunHistory, spec: str | None) -> float:
    if spec is None:
        raise CurvesError("--axis tokens needs --tokens-per-step (a number or a param name)")
    try:
        value = float(spec)
    except ValueError:
        text = _param(run, spec, "--tokens-per-step")
        try:
            value = float(text)
        except ValueError:
            raise CurvesError(
                f"{run.source}: run {run.run_id}: {spec}={text!r} is not a number of tokens "
                "per step"
            ) from None
    if not (value > 0 and math.isfinite(value)):
        raise CurvesError(f"--tokens-per-step: expected a positive number, but got {value!r}")
    return value


def last_per_step(points: Sequence[Point]) -> tuple[list[Point], int]:
    """The last logged value per step, in step order, and how many earlier ones it replaced."""
    latest: dict[float, Point] = {}
    for p in points:
        latest[p.step] = p
    return [latest[s] for s in sorted(latest)], len(points) - len(latest)


def condition_of(run: RunHistory, keys: Sequence[str]) -> tuple[str, dict[str, str]]:
    values = {k: _param(run, k, "--condition-keys") for k in keys}
    text = "_".join(values[k] for k in keys)
    return text, values


def thin_levels(levels: Sequence[float], most: int = MAX_DEFAULT_LEVELS) -> tuple[float, ...]:
    """At most `most` of `levels`, about evenly spaced on a log scale, always keeping the last."""
    ordered = sorted(set(levels))
    if len(ordered) <= most:
        return tuple(ordered)
    positive = [x for x in ordered if x > 0]
    lo, hi = math.log(positive[0]), math.log(positive[-1])
    picked: list[float] = []
    for i in range(most):
        goal = lo + (hi - lo) * i / (most - 1)
        best = min(positive, key=lambda x: abs(math.log(x) - goal))
        if best not in picked:
            picked.append(best)
    if positive[-1] not in picked:
        picked.append(positive[-1])
    return tuple(sorted(picked))


def _axis_values(run: RunHistory, points: Sequence[Point], options: ImportOptions) -> list[float]:
    if options.axis == "step":
        return [p.step for p in points]
    if options.axis == "tokens":
        tps = _tokens_per_step(run, options.tokens_per_step)
        return [p.step * tps for p in points]
    out = []
    for p in points:
        if p.elapsed is None:
            raise CurvesError(
                f"{run.source}: run {run.run_id} has no wall-clock time at step {p.step:g}; "
                "--axis seconds needs it (use --axis step)"
            )
        out.append(p.elapsed)
    return out


def rows_from_histories(runs: Sequence[RunHistory], options: ImportOptions) -> ImportResult:
    if options.axis not in AXES:
        raise CurvesError(f"--axis: expected step, tokens or seconds, but got {options.axis!r}")
    if not options.condition_keys:
        raise CurvesError(
            "--condition-keys: expected the params or tags whose values name a condition "
            "(e.g. --condition-keys optimizer,lr)"
        )
    unit = AXES[options.axis]
    result = ImportResult([], unit, options.metric, "within_run", {}, runs=len(runs))
    if not runs:
        raise CurvesError(f"no run logged {options.metric!r}; nothing to import")
    # Group runs by (condition, seed, host): a resume logged as a new run is merged.
    grouped: dict[tuple[str, Seed, str], list[RunHistory]] = {}
    names: dict[str, str] = {}
    for run in runs:
        text, values = condition_of(run, options.condition_keys)
        cid = safe_name(text)
        if names.setdefault(cid, text) != text:
            cid = safe_name(text + "#" + hashlib.sha256(text.encode()).hexdigest()[:6])
            names[cid] = text
        result.conditions[cid] = values
        seed = seed_id(
            _param(run, options.seed_key, "--seed-key") if options.seed_key else run.run_id
        )
        host = (
            safe_name(_param(run, options.host_key, "--host-key"))
            if options.host_key
            else DEFAULT_HOST
        )
        grouped.setdefault((cid, seed, host), []).append(run)
    if options.budget_key:
        return _separate_runs(grouped, options, result)
    merged: dict[tuple[str, Seed, str], tuple[RunHistory, list[Point], list[float]]] = {}
    for key, group in grouped.items():
        points: list[Point] = []
        for run in group:
            points.extend(run.points)
        kept, replaced = last_per_step(points)
        result.replaced += replaced
        if not kept:
            result.skipped.append(f"{group[0].run_id}: no point of {options.metric}")
            continue
        merged[key] = (group[-1], kept, _axis_values(group[-1], kept, options))
    if not merged:
        raise CurvesError(f"no run logged {options.metric!r}; nothing to import")
    longest = max(p[-1].step for _, p, _ in merged.values())
    complete = {k for k, (_, p, _) in merged.items() if p[-1].step >= longest}
    for k, (run, _, _) in merged.items():
        if k not in complete:
            result.censored.append(run.run_id)
    levels = options.levels or _default_levels(merged, complete, options)
    for (cid, seed, host), (_run, points, axis) in sorted(
        merged.items(), key=lambda kv: (kv[0][0], seed_key(kv[0][1]), kv[0][2])
    ):
        censored_after = None if (cid, seed, host) in complete else axis[-1]
        for level in levels:
            if axis[-1] < level - 1e-9 * max(1.0, abs(level)):
                continue  # the run never reached this level (censored before it)
            at = [i for i, a in enumerate(axis) if a <= level + 1e-9 * max(1.0, abs(level))]
            if not at:
                continue  # nothing logged yet at this level
            result.rows.append(
                CurveRow(
                    condition_id=cid,
                    budget=float(level),
                    seed=seed,
                    host=host,
                    value=points[at[-1]].value,
                    curve_kind="within_run",
                    censored_after=censored_after,
                )
            )
    return result


def _default_levels(
    merged: dict[tuple[str, Seed, str], tuple[RunHistory, list[Point], list[float]]],
    complete: set[tuple[str, Seed, str]],
    options: ImportOptions,
) -> tuple[float, ...]:
    """Levels every uncensored run logged (steps), thinned; a grid for wall-clock seconds."""
    axes = [merged[k][2] for k in complete]
    if options.axis == "seconds":
        lo = max(a[0] for a in axes)
        hi = min(a[-1] for a in axes)
        if not (hi > lo > 0):
            lo = max(hi / 64, 1e-9)
        return tuple(lo * (hi / lo) ** (i / (MAX_DEFAULT_LEVELS - 1)) for i in range(8))
    common = set(axes[0])
    for a in axes[1:]:
        common &= set(a)
    common = {x for x in common if x > 0}
    if not common:
        raise CurvesError(
            "no step was logged by every complete run; name the levels with --levels "
            "(e.g. --levels 1000,2000,4000)"
        )
    return thin_levels(sorted(common))


def _separate_runs(
    grouped: dict[tuple[str, Seed, str], list[RunHistory]],
    options: ImportOptions,
    result: ImportResult,
) -> ImportResult:
    """One run per budget (`--budget-key`): each run's last value at its own budget."""
    from stagewise.budget_units import parse_duration

    result.curve_kind = "separate_runs"
    by_cell: dict[tuple[str, float, Seed, str], CurveRow] = {}
    for (cid, seed, host), group in sorted(
        grouped.items(), key=lambda kv: (kv[0][0], seed_key(kv[0][1]), kv[0][2])
    ):
        for run in group:
            raw = _param(run, options.budget_key or "", "--budget-key")
            try:
                budget = parse_duration(raw) if options.axis == "seconds" else float(raw)
            except ValueError:
                raise CurvesError(
                    f"{run.source}: run {run.run_id}: {options.budget_key}={raw!r} is not a "
                    f"budget in {result.unit}"
                ) from None
            kept, replaced = last_per_step(run.points)
            result.replaced += replaced
            if not kept:
                result.skipped.append(f"{run.run_id}: no point of {options.metric}")
                continue
            if options.levels and budget not in options.levels:
                continue
            # Two runs of one cell (a rerun): the one logged later wins, counted as replaced.
            if (cid, budget, seed, host) in by_cell:
                result.replaced += 1
            by_cell[(cid, budget, seed, host)] = CurveRow(
                condition_id=cid,
                budget=budget,
                seed=seed,
                host=host,
                value=kept[-1].value,
                curve_kind="separate_runs",
            )
    result.rows = list(by_cell.values())
    return result


__all__ = [
    "AXES",
    "ImportOptions",
    "ImportResult",
    "Point",
    "RunHistory",
    "last_per_step",
    "rows_from_histories",
    "safe_name",
    "thin_levels",
]
