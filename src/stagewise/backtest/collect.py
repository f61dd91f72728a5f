"""Ground truth from a study: every condition at every budget level, run or read from the ledger.

`stagewise curves DIR` runs the full factorial (conditions x budgets x seeds x hosts) through the
study's own executors and the real runner. It does so by deriving, in memory, one extra stage per
budget level under a reserved id (`curves-<budget>`, e.g. `curves-10s`) with every condition as
its candidates, and handing each to `run_stage`, the same driver as `stagewise run`. So the runs
are ordinary ledger rows (stage = the reserved id): claimed atomically, never repeated once
finished, resumed after a kill by running the same command again, and counted by `status`-like
tools by stage. No gate pools a reserved stage, so no freeze is needed and the study's own gates
never read these cells. The study file itself is not changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from stagewise.backtest.table import CurveRow, CurvesError
from stagewise.budget_units import format_duration, parse_duration
from stagewise.executors.stage import Reporter, StageState, run_stage
from stagewise.ledger import Ledger, RunRecord
from stagewise.study.model import Candidates, Stage, Study

RESERVED_PREFIX = "curves-"


def curves_stage_id(budget_seconds: float) -> str:
    """The reserved stage id of a budget level: 10 -> `curves-10s`, 600 -> `curves-10m`."""
    return RESERVED_PREFIX + format_duration(budget_seconds)


def parse_budgets(text: str) -> tuple[float, ...]:
    """`10s,20s,40s` -> (10.0, 20.0, 40.0); distinct, ascending."""
    values = []
    for part in text.split(","):
        try:
            values.append(parse_duration(part.strip()))
        except ValueError as exc:
            raise CurvesError(f"--budgets: {exc}") from None
    if len(set(values)) != len(values):
        raise CurvesError(f"--budgets: duplicate levels in {text!r}; expected distinct budgets")
    return tuple(sorted(values))


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise CurvesError(f"--seeds: expected integers like 1,2,3, but got {text!r}") from None
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise CurvesError(f"--seeds: expected distinct non-negative integers, but got {text!r}")
    return seeds


def curves_study(
    study: Study, budgets: Sequence[float], seeds: Sequence[int], hosts: Sequence[str] | None
) -> Study:
    """The study with one reserved stage per budget level added (in memory only)."""
    clash = [s for s in study.stages if s.startswith(RESERVED_PREFIX)]
    if clash:
        raise CurvesError(
            f"{study.study_file}: stage id {clash[0]!r} uses the prefix {RESERVED_PREFIX!r}, "
            "which `stagewise curves` reserves for its levels; rename that stage"
        )
    chosen = (
        tuple(hosts)
        if hosts
        else tuple(h for h, v in study.hosts.items() if v.executor != "external")
    )
    if not chosen:
        raise CurvesError(
            f"{study.study_file}: no host that stagewise can run on (all are external); "
            "name one with --hosts or import a table instead"
        )
    for h in chosen:
        if h not in study.hosts:
            raise CurvesError(
                f"--hosts: no host {h!r} in {study.study_file}; hosts: {', '.join(study.hosts)}"
            )
        if study.hosts[h].executor == "external":
            raise CurvesError(
                f"--hosts: host {h!r} is external (results arrive by import); `curves` runs only "
                "local or Ray hosts"
            )
    extra = {
        curves_stage_id(b): Stage(
            stage_id=curves_stage_id(b),
            budget_seconds=float(b),
            seeds=tuple(seeds),
            hosts=chosen,
            candidates=Candidates("all"),
            purpose=f"stagewise curves: every condition at {format_duration(b)}",
        )
        for b in budgets
    }
    return dataclasses.replace(study, stages={**study.stages, **extra})


def run_curves(
    study: Study,
    ledger: Ledger,
    budgets: Sequence[float],
    seeds: Sequence[int],
    hosts: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    retries: int = 0,
    retry_failed: bool = False,
    reporter: Reporter | None = None,
    notify: Callable[[str], None] | None = None,
) -> list[StageState]:
    """Run every level's stage (shortest first); finished runs are skipped, so this resumes."""
    derived = curves_study(study, budgets, seeds, hosts)
    ledger.log_event(
        "curves.levels",
        study.name,
        {
            "budgets_seconds": list(budgets),
            "seeds": list(seeds),
            "hosts": list(derived.stages[curves_stage_id(budgets[0])].hosts),
            "stages": [curves_stage_id(b) for b in budgets],
        },
    )
    states = []
    for b in budgets:
        state = run_stage(
            derived,
            ledger,
            curves_stage_id(b),
            workers=workers,
            retries=retries,
            retry_failed=retry_failed,
            reporter=reporter,
            notify=notify,
        )
        states.append(state)
        if state.stopped:
            break
    return states


def _row(study: Study, rec: RunRecord, budget: float) -> CurveRow | None:
    if rec.status != "succeeded" or rec.val_bpb is None:
        return None
    try:
        cond = study.condition(rec.condition_id)
        label, role = cond.label, cond.role
    except KeyError:
        label, role = None, None
    return CurveRow(
        condition_id=rec.condition_id,
        budget=budget,
        seed=rec.seed,
        host=rec.host,
        value=float(rec.val_bpb),
        training_seconds=rec.training_seconds,
        tokens_M=rec.total_tokens_M,
        num_params_M=rec.num_params_M,
        label=label,
        role=role,
    )


def _reserved_budget(stage_id: str) -> float | None:
    if not stage_id.startswith(RESERVED_PREFIX):
        return None
    try:
        return parse_duration(stage_id[len(RESERVED_PREFIX) :])
    except ValueError:
        return None


def rows_from_ledger(
    study: Study, ledger: Ledger, *, only_reserved: bool = False
) -> tuple[list[CurveRow], dict[str, Any]]:
    """Succeeded runs as curves rows, with the budget of their stage; and what was skipped.

    The study's own stages count with their declared budgets, `curves-*` stages with theirs.
    Where the same (condition, budget, seed, host) was run by two stages, the first in the
    study's order is kept (a duplicate would make a level's mean count one cell twice).
    """
    budgets: dict[str, float] = {}
    if not only_reserved:
        budgets.update({sid: s.budget_seconds for sid, s in study.stages.items()})
    rows: dict[tuple[str, float, int | str, str], CurveRow] = {}
    skipped = {"not_succeeded": 0, "duplicate_cells": 0, "unknown_stage": 0}
    records = ledger.runs()
    order = {sid: i for i, sid in enumerate(study.stages)}
    records.sort(key=lambda r: (order.get(r.stage, len(order)), r.stage, r.key))
    known = set(study.condition_ids)
    skipped["not_in_matrix"] = 0
    for rec in records:
        if rec.condition_id not in known:
            skipped["not_in_matrix"] += 1  # a condition since removed from the matrix
            continue
        budget = budgets.get(rec.stage)
        if budget is None:
            budget = _reserved_budget(rec.stage)
        if budget is None:
            skipped["unknown_stage"] += 1
            continue
        row = _row(study, rec, budget)
        if row is None:
            skipped["not_succeeded"] += 1
            continue
        key = (row.condition_id, row.budget, row.seed, row.host)
        if key in rows:
            skipped["duplicate_cells"] += 1
            continue
        rows[key] = row
    return list(rows.values()), skipped


__all__ = [
    "RESERVED_PREFIX",
    "curves_stage_id",
    "curves_study",
    "parse_budgets",
    "parse_seeds",
    "rows_from_ledger",
    "run_curves",
]
