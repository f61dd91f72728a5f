"""From a study (and the decisions recorded so far) to the runs of every stage and their budget.

A stage's candidates are known when they are "all", an explicit list, or what an already
decided gate promoted. A stage fed by an undecided gate is "pending"; where the gate's rules fix
how many it will promote (a lone best_k, or keep of named conditions), that count is shown.

This module is the one candidate resolver: `resolve_candidates` turns the active decisions
(from the ledger, or from a bundle's decisions.json) into each stage's candidates, and
`Plan.candidates` is what every gate, report and verification reads. It sits below the ledger
(it reads decisions through the small `DecisionSource` protocol), so `RunKey`, the identity of
a planned run, lives here too and the ledger re-exports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stagewise.budget_units import round_hours
from stagewise.study.model import Gate, Stage, Study


@dataclass(frozen=True, order=True)
class RunKey:
    """One planned run: (stage, condition, seed, host)."""

    stage: str
    condition_id: str
    seed: int
    host: str

    def __str__(self) -> str:
        return f"{self.stage}/{self.condition_id}/seed{self.seed}/{self.host}"


class Decided(Protocol):
    """What the plan needs of an active decision (the ledger's `DecisionRecord` is one)."""

    @property
    def promoted(self) -> tuple[str, ...]: ...

    @property
    def manual(self) -> bool: ...


class DecisionSource(Protocol):
    """Where active decisions come from (the ledger is one)."""

    def active_decision(self, gate: str) -> Any: ...


def resolve_candidates(
    study: Study, promoted: Mapping[str, Iterable[str]]
) -> dict[str, tuple[str, ...] | None]:
    """Each stage's candidates, given what each decided gate promoted (None: still undecided).

    Promoted ids are put in matrix order, so a stage's runs do not depend on how a decision
    listed them.
    """
    order = {cid: i for i, cid in enumerate(study.condition_ids)}
    out: dict[str, tuple[str, ...] | None] = {}
    for stage in study.stages.values():
        cand = stage.candidates
        if cand.mode == "all":
            out[stage.stage_id] = study.condition_ids
        elif cand.mode == "list":
            out[stage.stage_id] = cand.ids
        else:
            chosen = promoted.get(cand.gate or "")
            out[stage.stage_id] = (
                None if chosen is None else tuple(sorted(chosen, key=lambda c: order.get(c, 10**9)))
            )
    return out


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    candidates: tuple[str, ...] | None  # None while the feeding gate is undecided
    candidate_count: int | None  # known count, or the count the gate's rules fix
    count_is_upper_bound: bool
    decision: Decided | None  # the decision that fed this stage, if any
    # For a token or step budget: hours estimated from the study's recorded throughput (None
    # when nothing is recorded yet); a time budget needs no estimate.
    estimated_gpu_hours: float | None = None

    @property
    def known(self) -> bool:
        return self.candidates is not None

    @property
    def runs(self) -> tuple[RunKey, ...]:
        if self.candidates is None:
            return ()
        return tuple(
            RunKey(self.stage.stage_id, cid, seed, host)
            for host in self.stage.hosts
            for seed in self.stage.seeds
            for cid in self.candidates
        )

    @property
    def budgeted_gpu_hours(self) -> float | None:
        """candidates x seeds x hosts x budget (the paper's definition); None for a token or
        step budget, which has no length in hours until it runs (see `estimated_gpu_hours`)."""
        if self.candidate_count is None or self.stage.budget.seconds is None:
            return None
        return (
            self.candidate_count
            * len(self.stage.seeds)
            * len(self.stage.hosts)
            * self.stage.budget_hours
        )

    @property
    def status(self) -> str:
        if self.known:
            return "known"
        return "pending (at most)" if self.count_is_upper_bound else "pending"

    def to_json(self) -> dict[str, Any]:
        """One stage of `stagewise plan --json`."""
        return {
            "stage": self.stage.stage_id,
            "budget_seconds": self.stage.budget_seconds,
            "budget": str(self.stage.budget),
            "budget_unit": self.stage.budget.unit,
            "budget_amount": self.stage.budget.amount,
            "seeds": list(self.stage.seeds),
            "hosts": list(self.stage.hosts),
            "candidate_source": self.stage.candidates.describe(),
            "status": self.status,
            "candidates": list(self.candidates) if self.candidates is not None else None,
            "candidate_count": self.candidate_count,
            "decision_manual": self.decision.manual if self.decision else None,
            "budgeted_gpu_hours": round_hours(self.budgeted_gpu_hours),
            "estimated_gpu_hours": round_hours(self.estimated_gpu_hours),
            "runs": [
                {"condition_id": k.condition_id, "seed": k.seed, "host": k.host} for k in self.runs
            ],
        }


@dataclass(frozen=True)
class Plan:
    study: Study
    stages: tuple[StagePlan, ...]

    def stage(self, stage_id: str) -> StagePlan:
        for sp in self.stages:
            if sp.stage.stage_id == stage_id:
                return sp
        raise KeyError(stage_id)

    @property
    def candidates(self) -> dict[str, tuple[str, ...] | None]:
        """Each stage's candidates (None while its feeding gate is undecided)."""
        return {sp.stage.stage_id: sp.candidates for sp in self.stages}

    def gate_candidates(self, gate: Gate) -> tuple[str, ...] | None:
        """The conditions every pooled stage of the gate plans, in matrix order (None while one
        of them is unknown)."""
        sets = []
        for sid in gate.stages:
            cands = self.stage(sid).candidates
            if cands is None:
                return None
            sets.append(set(cands))
        common = set.intersection(*sets) if sets else set()
        return tuple(c for c in self.study.condition_ids if c in common)

    @property
    def total_budgeted_gpu_hours(self) -> float | None:
        hours = [sp.budgeted_gpu_hours for sp in self.stages]
        if any(h is None for h in hours):
            return None
        return sum(h for h in hours if h is not None)

    @property
    def known_budgeted_gpu_hours(self) -> float:
        return sum(sp.budgeted_gpu_hours or 0.0 for sp in self.stages if sp.known)

    def to_json(self) -> dict[str, Any]:
        """The object of `stagewise plan --json`."""
        return {
            "study": self.study.name,
            "stages": [sp.to_json() for sp in self.stages],
            "total_budgeted_gpu_hours": self.total_shown,
            "known_budgeted_gpu_hours": round_hours(self.known_budgeted_gpu_hours),
        }

    @property
    def total_shown(self) -> float | str | None:
        """The total as `plan --json` writes it: rounded hours, or why there is none yet."""
        total = self.total_budgeted_gpu_hours
        return round_hours(total) if total is not None else self._why_no_total()

    def _why_no_total(self) -> str:
        """ "unknown" when a stage counts tokens or steps (no hours before it runs), else
        "pending" (a stage's candidates await a gate)."""
        counted = any(sp.stage.budget.seconds is None for sp in self.stages)
        return "unknown" if counted else "pending"


def fixed_promotion_count(gate: Gate, study: Study) -> tuple[int | None, bool]:
    """How many a promote gate will pass, where its rules fix it: (count, is_upper_bound)."""
    exact = 0
    bound = 0
    for rule in gate.rules:
        if rule.rule == "best_k" and not rule.targeted:
            n = int(rule.params["k"])
        elif rule.rule == "keep":
            n = len(
                {
                    c.condition_id
                    for c in study.conditions
                    if c.condition_id in rule.conditions or c.role in rule.roles
                }
            )
        else:
            return None, False
        bound += n
        exact = n
    if len(gate.rules) == 1:
        return exact, False
    return bound, True


def build_plan(study: Study, ledger: DecisionSource | None = None) -> Plan:
    decided: dict[str, Decided] = {}
    if ledger is not None:
        for gate_id in study.gates:
            decision = ledger.active_decision(gate_id)
            if decision is not None:
                decided[gate_id] = decision
    resolved = resolve_candidates(study, {g: d.promoted for g, d in decided.items()})
    counted = any(s.budget.seconds is None for s in study.stages.values())
    rates = _throughput(ledger) if counted and ledger is not None else {}
    plans = []
    for stage in study.stages.values():
        cand = stage.candidates
        ids = resolved[stage.stage_id]
        if ids is not None:
            count: int | None = len(ids)
            upper = False
        else:
            assert cand.gate is not None
            count, upper = fixed_promotion_count(study.gates[cand.gate], study)
        plans.append(
            StagePlan(
                stage=stage,
                candidates=ids,
                candidate_count=count,
                count_is_upper_bound=upper,
                decision=decided.get(cand.gate) if cand.gate else None,
                estimated_gpu_hours=_estimate(stage, count, rates),
            )
        )
    return Plan(study, tuple(plans))


def _throughput(ledger: Any) -> dict[str, float]:
    """Recorded training seconds per token and per step over the study's succeeded runs."""
    runs = getattr(ledger, "runs", None)
    if runs is None:
        return {}
    seconds = tokens = steps = 0.0
    for r in runs(status="succeeded"):
        if r.training_seconds and r.total_tokens_M and r.num_steps:
            seconds += r.training_seconds
            tokens += r.total_tokens_M * 1e6
            steps += r.num_steps
    if seconds <= 0:
        return {}
    return {"tokens": seconds / tokens, "steps": seconds / steps}


def _estimate(stage: Stage, count: int | None, rates: dict[str, float]) -> float | None:
    rate = rates.get(stage.budget.unit)
    if count is None or rate is None:
        return None
    return count * len(stage.seeds) * len(stage.hosts) * stage.budget.amount * rate / 3600.0
