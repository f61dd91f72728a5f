"""The study as plain, immutable data: what the loader produces and every later layer reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from stagewise import defaults
from stagewise.budget_units import Budget

if TYPE_CHECKING:
    from stagewise.study.slurm_options import SlurmOptions

ParamValue = int | float | str
ExecutorKind = Literal["local", "ray", "slurm", "external"]
GateKind = Literal["promote", "confirm"]
GateDecide = Literal["auto", "manual"]


@dataclass(frozen=True)
class Condition:
    """One row of the candidate matrix."""

    condition_id: str
    label: str
    role: str
    params: dict[str, ParamValue]
    description: str = ""


@dataclass(frozen=True)
class Host:
    """A host block: where the runs of that block execute."""

    name: str
    executor: ExecutorKind
    devices: tuple[str, ...] = ("cpu",)
    workers: int | None = None
    address: str | None = None
    resources: dict[str, float] = field(default_factory=dict)
    num_cpus: float | None = None
    num_gpus: float | None = None
    command: tuple[str, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    slurm: SlurmOptions | None = None  # set for executor = "slurm" (study/slurm_options.py)


@dataclass(frozen=True)
class Candidates:
    """Which conditions a stage trains: all of them, an explicit list, or what a gate promoted."""

    mode: Literal["all", "list", "gate"]
    ids: tuple[str, ...] = ()
    gate: str | None = None

    def describe(self) -> str:
        if self.mode == "all":
            return "all"
        if self.mode == "gate":
            return f"promoted by {self.gate}"
        return ", ".join(self.ids)


@dataclass(frozen=True)
class Stage:
    stage_id: str
    budget_seconds: float
    seeds: tuple[int, ...]
    hosts: tuple[str, ...]
    candidates: Candidates
    purpose: str = ""
    # Set for a token or step budget (then budget_seconds is 0: no wall-clock budget).
    budget_spec: Budget | None = None

    @property
    def budget(self) -> Budget:
        """The budget in its own unit (seconds, tokens or steps)."""
        return self.budget_spec or Budget("seconds", self.budget_seconds)

    @property
    def budget_hours(self) -> float:
        return self.budget_seconds / 3600.0


@dataclass(frozen=True)
class Rule:
    """One declarative rule of a gate; `params` holds the rule's own settings (k, threshold)."""

    rule: str
    params: dict[str, Any]
    conditions: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    reason: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def targeted(self) -> bool:
        return bool(self.conditions or self.roles)


@dataclass(frozen=True)
class Gate:
    gate_id: str
    kind: GateKind
    stages: tuple[str, ...]
    rules: tuple[Rule, ...]
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    # "manual": `stagewise run DIR` shows the analysis and leaves the call to `stagewise decide`.
    decide: GateDecide = "auto"


@dataclass(frozen=True)
class Study:
    """A loaded, validated study folder."""

    root: Path
    name: str
    reference: str
    metric: str
    matrix_file: str
    conditions: tuple[Condition, ...]
    hosts: dict[str, Host]
    stages: dict[str, Stage]
    gates: dict[str, Gate]
    runner: dict[str, Any]
    command: tuple[str, ...] | None
    raw: dict[str, Any]

    @property
    def study_file(self) -> Path:
        return self.root / "study.toml"

    def condition(self, condition_id: str) -> Condition:
        for cond in self.conditions:
            if cond.condition_id == condition_id:
                return cond
        raise KeyError(condition_id)

    @property
    def condition_ids(self) -> tuple[str, ...]:
        return tuple(c.condition_id for c in self.conditions)

    @property
    def min_steps(self) -> int:
        """`[runner] min_steps`: a run that trained fewer optimizer steps is `too_short`."""
        value = self.runner.get("min_steps", defaults.MIN_STEPS)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    def gates_of_stage(self, stage_id: str) -> list[Gate]:
        """The gates that pool this stage (paper06's stage1b is pooled by g10a and by g10)."""
        return [gate for gate in self.gates.values() if stage_id in gate.stages]
