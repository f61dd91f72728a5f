"""Which runs of a stage to start, in which order, and what each one is given.

`build_queue` is the one place that decides, from the ledger, what `stagewise run` does with
each planned run: run it, skip it (succeeded, or failed without `--retry-failed`) or wait for
an import (an external host). The real run and `--dry-run` both call it, so the dry run shows
exactly what a real run would do. `make_task` resolves one claimed run into its `RunTask`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from stagewise.executors.base import RunTask
from stagewise.executors.command import (
    build_argv,
    device_batch_size,
    run_env,
    timeout_seconds,
)
from stagewise.ledger import RunKey, RunRecord
from stagewise.paths import RUN_OUT, run_dir
from stagewise.study.model import Study

Action = Literal["run", "skip", "awaiting import"]

# One compile cache per study: every run of an architecture after the first compiles from it
# (torch.compile's inductor kernels and Triton's), instead of paying the full compile again.
COMPILE_CACHE = ".compile-cache"


@dataclass(frozen=True)
class QueueEntry:
    """What the driver does with one planned run, and why."""

    key: RunKey
    status: str  # the ledger's status now ("pending" when it has no row yet)
    action: Action
    executor: str
    attempt: int  # the attempt this run would be if it started now


@dataclass(frozen=True)
class StageQueue:
    entries: tuple[QueueEntry, ...]

    @property
    def to_run(self) -> list[RunKey]:
        return [e.key for e in self.entries if e.action == "run"]

    @property
    def already_done(self) -> list[str]:
        return [
            str(e.key)
            for e in self.entries
            if e.action == "skip" and e.status == "succeeded" and e.executor != "external"
        ]

    @property
    def previously_failed(self) -> list[str]:
        return [
            str(e.key)
            for e in self.entries
            if e.action == "skip" and e.status == "failed" and e.executor != "external"
        ]

    @property
    def awaiting_import(self) -> list[str]:
        return [str(e.key) for e in self.entries if e.action == "awaiting import"]

    def hosts_by_executor(self) -> dict[str, list[str]]:
        """The hosts with runs to start, grouped by executor kind, in queue order."""
        out: dict[str, list[str]] = {}
        for entry in self.entries:
            if entry.action == "run" and entry.key.host not in out.setdefault(entry.executor, []):
                out[entry.executor].append(entry.key.host)
        return {kind: hosts for kind, hosts in out.items() if hosts}


def interleaved(keys: Iterable[RunKey]) -> list[RunKey]:
    """Alternate hosts (and seeds) so every block makes progress from the start."""
    return sorted(keys, key=lambda k: (k.seed, k.condition_id, k.host))


def build_queue(
    study: Study,
    keys: Iterable[RunKey],
    records: Mapping[RunKey, RunRecord],
    *,
    retry_failed: bool = False,
    recipes: Mapping[str, str] | None = None,
) -> StageQueue:
    """Every planned run with its action, in the order the runs would start.

    `recipes` (condition -> the sha256 of the recipe its runs train now): a finished run that
    recorded another recipe is trained again (its result no longer counts at a gate frozen on
    the current recipe; the one it replaces stays on the ledger's event chain).
    """
    entries = []
    for key in interleaved(keys):
        record = records.get(key)
        status = record.status if record else "pending"
        executor = study.hosts[key.host].executor
        action: Action
        if executor != "external" and stale_recipe(record, recipes):
            action = "run"
        elif executor == "external":
            action = "skip" if status in ("succeeded", "failed") else "awaiting import"
        elif status == "succeeded" or (status == "failed" and not retry_failed):
            action = "skip"
        else:
            action = "run"
        attempt = (record.attempts if record else 0) + 1
        entries.append(QueueEntry(key, status, action, executor, attempt))
    return StageQueue(tuple(entries))


def stale_recipe(record: RunRecord | None, recipes: Mapping[str, str] | None) -> bool:
    """A finished run that recorded a recipe other than its condition's recipe now."""
    if record is None or recipes is None or record.status not in ("succeeded", "failed"):
        return False
    now = recipes.get(record.condition_id)
    return record.recipe_sha256 is not None and now is not None and record.recipe_sha256 != now


def compile_cache_env(study: Study) -> dict[str, str]:
    """Where torch.compile keeps its caches for this study (unless the user chose already)."""
    root = study.root / COMPILE_CACHE
    wanted = {"TORCHINDUCTOR_CACHE_DIR": root / "inductor", "TRITON_CACHE_DIR": root / "triton"}
    return {name: str(path) for name, path in wanted.items() if name not in os.environ}


def make_task(
    study: Study,
    key: RunKey,
    attempt: int,
    owner: str,
    overrides: Mapping[str, Any],
    measured_overhead: float | None = None,
) -> RunTask:
    """One attempt of one run: argv, folders, budget and timeout (`measured_overhead`: see
    `executors.command.grace_seconds`)."""
    stage = study.stages[key.stage]
    host = study.hosts[key.host]
    condition = study.condition(key.condition_id)
    folder = run_dir(study.root, key.stage, key.condition_id, key.seed, key.host)
    out_dir = folder / RUN_OUT
    argv = build_argv(study, condition, stage, key.seed, host, out_dir, overrides)
    batch = overrides.get("device_batch_size", device_batch_size(study, condition))
    return RunTask(
        key=key,
        argv=tuple(argv),
        env={
            **compile_cache_env(study),
            **run_env(study, stage, condition, key.seed, host, out_dir),
        },
        workdir=str(study.root),
        out_dir=str(out_dir),
        log_path=str(folder / "train.log"),
        budget_seconds=stage.budget_seconds,
        timeout_seconds=timeout_seconds(study, stage.budget_seconds, measured_overhead),
        attempt=attempt,
        owner=owner,
        device_batch_size=int(batch) if batch is not None else None,
    )


__all__ = [
    "COMPILE_CACHE",
    "Action",
    "QueueEntry",
    "StageQueue",
    "build_queue",
    "compile_cache_env",
    "interleaved",
    "make_task",
    "stale_recipe",
]
