"""`stagewise run`: turn a frozen stage plan into finished runs, resumably.

The ledger holds all state. Before anything runs, the driver takes the study's run lock
(`ownership`), puts back every `running` row whose driver is gone (`recovery`: `interrupted`,
to be rerun from scratch, or adopted when it had finished), and refuses if another driver is
alive. The queue (`queue.build_queue`, shared with `--dry-run`) lists the runs to start; each is
claimed atomically just before it starts (pending/interrupted -> running, owned by this driver)
and only its owner may close it (`dispatch`), so a SIGKILL of the driver (or a reboot) at any
moment loses nothing and records nothing twice: the next `stagewise run` reruns exactly the
runs that had not finished.

Whether a stage's gates are frozen is the gates layer's knowledge, above this one: the caller
passes that check in (`frozen_check`, e.g. `stagewise.gates.freeze.require_frozen`, as the CLI,
the demo and the whole-study driver do).
"""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Callable
from typing import Any

from stagewise.errors import ClusterLost, ExecutorError, FrozenRuleMismatch
from stagewise.executors.base import Executor, executor_class
from stagewise.executors.command import missing_data
from stagewise.executors.dispatch import clear_notices, drive
from stagewise.executors.ownership import driver_owner, owner_alive, run_lock
from stagewise.executors.queue import StageQueue, build_queue, make_task, stale_recipe
from stagewise.executors.recipe import resolve_recipes
from stagewise.executors.recovery import finished_result, reattach_stale, recover_stale
from stagewise.executors.state import NullReporter, Reporter, RunningInfo, StageState
from stagewise.ledger import Ledger
from stagewise.plan import build_plan
from stagewise.study.model import Study
from stagewise.words import plural

# Raises FrozenRuleMismatch when gate `gate_id` of the study does not read as frozen.
FrozenCheck = Callable[[Study, Ledger, str], Any]
ExecutorFactory = Callable[[str, Study, list[Any], int | None], Executor]


def require_frozen_gates(
    study: Study,
    ledger: Ledger,
    stage_id: str,
    *,
    allow_unfrozen: bool,
    reason: str | None,
    frozen_check: FrozenCheck | None = None,
) -> list[str]:
    """Every gate pooling the stage must be frozen as written; returns the problems waived."""
    gates = study.gates_of_stage(stage_id)
    if not gates:
        return []
    found = _frozen_problems(study, ledger, stage_id, frozen_check)
    if found and not allow_unfrozen:
        raise FrozenRuleMismatch(
            f"stage {stage_id} cannot run: {found[0][1]} (or pass --allow-unfrozen to run "
            "anyway; that is recorded in the ledger)"
        )
    problems = [f"{gate}: {problem}" for gate, problem in found]
    if problems:
        ledger.log_event(
            "run.allow_unfrozen",
            stage_id,
            {
                "gates": [g.gate_id for g in gates],
                "problems": problems,
                "reason": reason or "--allow-unfrozen given on the command line",
                "by": "stagewise run --allow-unfrozen",
            },
        )
    return problems


def _frozen_problems(
    study: Study, ledger: Ledger, stage_id: str, frozen_check: FrozenCheck | None
) -> list[tuple[str, str]]:
    problems = []
    for gate in study.gates_of_stage(stage_id):
        if frozen_check is None:
            problems.append(
                (
                    gate.gate_id,
                    f"gate {gate.gate_id} pools stage {stage_id}, and no frozen_check was given "
                    "to tell whether it is frozen (pass "
                    "frozen_check=stagewise.gates.freeze.require_frozen)",
                )
            )
            continue
        try:
            frozen_check(study, ledger, gate.gate_id)
        except FrozenRuleMismatch as exc:
            problems.append((gate.gate_id, str(exc)))
    return problems


def run_stage(
    study: Study,
    ledger: Ledger,
    stage_id: str,
    *,
    workers: int | None = None,
    retries: int = 0,
    dry_run: bool = False,
    allow_unfrozen: bool = False,
    reason: str | None = None,
    retry_failed: bool = False,
    reporter: Reporter | None = None,
    wait: bool = True,
    notify: Callable[[str], None] | None = None,
    executor_factory: ExecutorFactory | None = None,
    frozen_check: FrozenCheck | None = None,
) -> StageState:
    """Run every claimable run of a stage; see the module docstring. Returns the final state."""
    if stage_id not in study.stages:
        raise ExecutorError(
            f"{study.study_file}: no stage {stage_id!r}; stages: {', '.join(study.stages)}"
        )
    if retries < 0:
        raise ExecutorError(f"--retries must be >= 0, but got --retries {retries}")
    reporter = reporter or NullReporter()
    stage = study.stages[stage_id]
    if not dry_run and executor_factory is None:
        problem = missing_data(study, [stage_id])
        if problem is not None:
            raise ExecutorError(problem)
    plan = build_plan(study, ledger).stage(stage_id)
    if plan.candidates is None:
        gate = stage.candidates.gate
        raise ExecutorError(
            f"stage {stage_id} trains what gate {gate} promotes, and {gate} is not decided "
            f"yet; apply it first (`stagewise gate {study.root} {gate}`)"
        )
    state = StageState(stage=stage_id, total=len(plan.runs), retries=retries)
    recipes = stage_recipes(study, plan.candidates)
    # Runs of a recipe replaced since (an amended freeze) are trained again; never while the
    # stage's gates are not frozen as written (--allow-unfrozen keeps what is recorded).
    retrain = (
        {cid: sha for cid, (sha, _) in recipes.items()} if study.gates_of_stage(stage_id) else None
    )
    if dry_run:
        records = {r.key: r for r in ledger.runs(stage=stage_id)}
        problems = _frozen_problems(study, ledger, stage_id, frozen_check)
        queue = build_queue(
            study,
            plan.runs,
            records,
            retry_failed=retry_failed,
            recipes=None if problems else retrain,
        )
        return _dry_run(study, queue, state, None if allow_unfrozen else problems)
    waived = require_frozen_gates(
        study,
        ledger,
        stage_id,
        allow_unfrozen=allow_unfrozen,
        reason=reason,
        frozen_check=frozen_check,
    )

    me = driver_owner()
    with run_lock(study, wait=wait, notify=notify):
        ledger.ensure_runs(plan.runs)
        # Runs a lost driver left to cluster jobs are followed, not rerun (same attempt).
        ledger.close_settled_jobs()
        attached = reattach_stale(ledger, me, study, stage_id)
        state.reattached = [str(key) for key, _job in attached]
        state.recovered, state.adopted = recover_stale(ledger, me, study)
        records = {r.key: r for r in ledger.runs(stage=stage_id)}
        queue = build_queue(
            study,
            plan.runs,
            records,
            retry_failed=retry_failed,
            recipes=None if waived else retrain,
        )
        stale = frozenset(k for k in queue.to_run if stale_recipe(records.get(k), retrain))
        state.retrained = sorted(map(str, stale))
        state.already_done = queue.already_done
        state.previously_failed = queue.previously_failed
        state.awaiting_import = queue.awaiting_import
        followed = {key for key, _job in attached}
        pending = deque(k for k in queue.to_run if k not in followed)
        by_kind = queue.hosts_by_executor()
        for key, _job in attached:
            kind_of = study.hosts[key.host].executor
            if key.host not in by_kind.setdefault(kind_of, []):
                by_kind[kind_of].append(key.host)

        factory = executor_factory or _make_executor
        executors: dict[str, Executor] = {}
        try:
            for kind, host_names in by_kind.items():
                executors[kind] = factory(
                    kind, study, [study.hosts[h] for h in host_names], workers
                )
                for h in host_names:
                    if executors[kind].capacity(h) < 1:
                        raise ExecutorError(f"host {h} has no slot to run on")
            for kind, ex in executors.items():
                slots = sum(ex.capacity(h) for h in by_kind[kind])
                state.slots += slots if workers is None else min(slots, workers)
            for key, job in attached:
                task = make_task(study, key, job.attempt, me, {})
                state.running[key] = RunningInfo(
                    key,
                    job.attempt,
                    slot=f"{job.job_id} re-attached",
                    budget_seconds=task.budget_seconds,
                )
                executors[study.hosts[key.host].executor].reattach(task, job.job_id)
            state.pending = len(pending)
            reporter.begin(state)
            try:
                drive(
                    study,
                    ledger,
                    stage,
                    pending,
                    executors,
                    state,
                    reporter,
                    me,
                    retries,
                    retry_failed,
                    recipes,
                    stale,
                )
            except ClusterLost as exc:
                raise _cluster_lost(study, ledger, stage_id, state, me, exc) from None
            finally:
                clear_notices(ledger, state, me)
                reporter.end(state)  # also on an error: a live view must give the terminal back
        finally:
            for ex in executors.values():
                ex.close()  # stops and waits for any child still running
            # Only after an error or a second Ctrl-C can runs be left: put them back now
            # rather than waiting for the next `stagewise run` to find their driver gone.
            for key in list(state.running):
                ledger.mark_interrupted(key, me, "driver stopped before the run ended")
    return state


def _cluster_lost(
    study: Study, ledger: Ledger, stage_id: str, state: StageState, me: str, exc: ClusterLost
) -> ClusterLost:
    """The cluster went away mid-stage: put the runs in flight back (they rerun from scratch on
    resume) and say, on one line, what was lost, what was in flight and how to resume."""
    in_flight = sorted(str(k) for k in state.running)
    for key in list(state.running):
        if not exc.keep_jobs:
            ledger.mark_interrupted(key, me, f"interrupted: {exc}")
        state.running.pop(key)  # kept jobs stay `running`: the next driver re-attaches
    state.stopped = "cluster lost"
    what = (
        "left with their jobs (the next run re-attaches)"
        if exc.keep_jobs
        else ("put back as interrupted")
    )
    runs = (
        f"{plural(len(in_flight), 'run')} in flight {what} ({', '.join(in_flight)})"
        if in_flight
        else "no run was in flight"
    )
    return ClusterLost(
        f"{exc}; {runs}; once the cluster is back, resume with "
        f"`{shlex.join(['stagewise', 'run', str(study.root), stage_id])}`",
        in_flight=tuple(in_flight),
        keep_jobs=exc.keep_jobs,
    )


def stage_recipes(study: Study, condition_ids: Any) -> dict[str, tuple[str, str]]:
    """condition -> (sha256, canonical text) of the recipe its runs train now."""
    return {
        cid: (recipe.sha256, recipe.canonical)
        for cid, recipe in resolve_recipes(study, condition_ids).items()
    }


def _make_executor(kind: str, study: Study, hosts: list[Any], workers: int | None) -> Executor:
    return executor_class(kind)(study, hosts, workers=workers)


def _dry_run(
    study: Study,
    queue: StageQueue,
    state: StageState,
    frozen_problems: list[tuple[str, str]] | None,
) -> StageState:
    """What `run` would do, from the same queue a real run builds, changing nothing."""
    problem = frozen_problems[0][1] if frozen_problems else None
    for entry in queue.entries:
        task = make_task(study, entry.key, entry.attempt, "dry-run", {})
        state.dry_run.append(
            {
                "run": str(entry.key),
                "status": entry.status,
                "action": entry.action,
                "executor": entry.executor,
                "attempt": entry.attempt,
                "argv": list(task.argv),
                "timeout_seconds": task.timeout_seconds,
                "log": task.log_path,
                "frozen_problem": problem,
            }
        )
    return state


__all__ = [
    "FrozenCheck",
    "NullReporter",
    "Reporter",
    "RunningInfo",
    "StageState",
    "driver_owner",
    "finished_result",
    "owner_alive",
    "recover_stale",
    "require_frozen_gates",
    "run_stage",
]
