"""What a walk did (or, with a dry run, would do), and the exit code its ending means."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from stagewise.executors.stage import StageState

WalkOutcome = Literal["complete", "waiting", "failed", "interrupted", "through", "dry_run"]

EXIT_CODES: dict[str, int] = {
    "complete": 0,
    "waiting": 0,  # nothing is wrong: a human or another host has the next move
    "through": 0,
    "dry_run": 0,
    "failed": 1,
    "interrupted": 130,
}


@dataclass
class StudyWalk:
    """What a walk did (or, with `dry_run`, would do); `outcome` says why it ended."""

    study: str
    outcome: WalkOutcome = "complete"
    waiting_for: str | None = None
    stopped_at: str | None = None  # the stage or gate where the walk stopped, if it did
    frozen: list[dict[str, Any]] = field(default_factory=list)
    stages: list[StageState] = field(default_factory=list)
    gates: list[dict[str, Any]] = field(default_factory=list)  # gate objects applied now
    awaiting_decision: dict[str, Any] | None = None  # a manual gate's analysis
    plan: list[dict[str, Any]] = field(default_factory=list)  # the dry run's steps
    started: float = field(default_factory=time.monotonic)
    # Each stage's overall ETA when it started vs the time the walk then took (walk.progress).
    eta_checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]

    def as_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "outcome": self.outcome,
            "exit_code": self.exit_code,
            "waiting_for": self.waiting_for,
            "stopped_at": self.stopped_at,
            "frozen": self.frozen,
            "stages": [s.as_dict() for s in self.stages],
            "gates_applied": [
                {
                    "gate": g["gate"],
                    "kind": g["kind"],
                    "promoted": [
                        c["condition_id"]
                        for c in g["conditions"]
                        if c["verdict"] in ("promote", "pass")
                    ],
                }
                for g in self.gates
            ],
            "awaiting_decision": self.awaiting_decision,
            "dry_run": self.plan or None,
            "wall_seconds": round(time.monotonic() - self.started, 3),
            "eta_checks": self.eta_checks,
        }
