"""Immutable records read back from the ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# A run's identity is a plan concept; the ledger stores runs under it and re-exports it.
from stagewise.plan import RunKey

__all__ = [
    "RUN_STATES",
    "DecisionRecord",
    "Event",
    "FreezeRecord",
    "JobRecord",
    "RunKey",
    "RunRecord",
]

RUN_STATES = ("pending", "running", "succeeded", "failed", "interrupted")


@dataclass(frozen=True)
class RunRecord:
    key: RunKey
    status: str
    cause: str | None
    attempts: int
    source: str | None
    owner: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    val_bpb: float | None
    training_seconds: float | None
    total_seconds: float | None
    peak_vram_mb: float | None
    mfu_percent: float | None
    total_tokens_M: float | None
    num_steps: int | None
    num_params_M: float | None
    depth: int | None
    summary_json: str | None
    log_path: str | None
    checkpoint_path: str | None
    checkpoint_sha256: str | None
    log_tail: str | None
    # The sha256 of the resolved recipe the run trained (None: recorded before schema v4).
    recipe_sha256: str | None = None

    @property
    def stage(self) -> str:
        return self.key.stage

    @property
    def condition_id(self) -> str:
        return self.key.condition_id

    @property
    def seed(self) -> int:
        return self.key.seed

    @property
    def host(self) -> str:
        return self.key.host

    @property
    def summary(self) -> dict[str, Any]:
        return dict(json.loads(self.summary_json)) if self.summary_json else {}


@dataclass(frozen=True)
class JobRecord:
    """A cluster job carrying one attempt of a run (schema v4): which job, and its last state.

    `job_id` is the scheduler's id (`12345_3` for task 3 of a Slurm array); `state` and `reason`
    are what the scheduler last said (`PENDING`/`Resources`, `RUNNING`, `TIMEOUT`, ...);
    `ended` is set once the driver has collected the attempt's outcome.
    """

    key: RunKey
    attempt: int
    executor: str
    job_id: str
    folder: str | None
    log_path: str | None
    state: str | None
    reason: str | None
    node: str | None
    submitted_at: str
    updated_at: str | None
    ended: bool


@dataclass(frozen=True)
class Event:
    seq: int
    ts: str
    kind: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str
    format: int = 1  # how `hash` was computed (see ledger.core.event_hash)


@dataclass(frozen=True)
class FreezeRecord:
    id: int
    gate: str
    kind: str  # "freeze" | "amend"
    sha256: str
    canonical: str
    frozen_at: str
    post_hoc: bool
    reason: str | None
    results_at_freeze: list[dict[str, Any]]
    event_seq: int


@dataclass(frozen=True)
class DecisionRecord:
    id: int
    gate: str
    kind: str  # "computed" | "manual"
    promoted: tuple[str, ...]
    reason: str | None
    source: str | None
    frozen_sha256: str | None
    payload: dict[str, Any]
    decided_at: str
    withdrawn_at: str | None
    withdraw_reason: str | None
    event_seq: int

    @property
    def manual(self) -> bool:
        return self.kind == "manual"

    def as_dict(self) -> dict[str, Any]:
        """The whole record as plain data (the audit bundle's decisions.json rows)."""
        return {
            "id": self.id,
            "gate": self.gate,
            "kind": self.kind,
            "manual": self.manual,
            "promoted": list(self.promoted),
            "reason": self.reason,
            "source": self.source,
            "frozen_sha256": self.frozen_sha256,
            "decided_at": self.decided_at,
            "active": self.active,
            "withdrawn_at": self.withdrawn_at,
            "withdraw_reason": self.withdraw_reason,
            "payload": self.payload,
        }

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None
