"""From a study (and the decisions recorded so far) to the runs of every stage and their budget.

A stage's candidates are known when they are "all", an explicit list, or what an already
decided gate promoted. A stage fed by an undecided gate is "pending"; where the gate's rules fix
how many it will promote (a lone best_k, or keep of named conditions), that count is shown.
"""

from __future__ import annotations

from dataclasses import dataclass

from stagewise.ledger import DecisionRecord, Ledger, RunKey
from stagewise.study.model import Gate, Stage, Study


@dataclass(frozen=True)
class StagePlan:
    stage: Stage
    candidates: tuple[str, ...] | None  # None while the feeding gate is undecided
    candidate_count: int | None  # known count, or the count the gate's rules fix
    count_is_upper_bound: bool
    decision: DecisionRecord | None  # the decision that fed this stage, if any

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
        """candidates x seeds x hosts x budget (the paper's definition)."""
        if self.candidate_count is None:
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
    def total_budgeted_gpu_hours(self) -> float | None:
        hours = [sp.budgeted_gpu_hours for sp in self.stages]
        if any(h is None for h in hours):
            return None
        return sum(h for h in hours if h is not None)

    @property
    def known_budgeted_gpu_hours(self) -> float:
        return sum(sp.budgeted_gpu_hours or 0.0 for sp in self.stages if sp.known)


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


def build_plan(study: Study, ledger: Ledger | None = None) -> Plan:
    decided: dict[str, DecisionRecord] = {}
    if ledger is not None:
        for gate_id in study.gates:
            decision = ledger.active_decision(gate_id)
            if decision is not None:
                decided[gate_id] = decision
    plans = []
    order = {cid: i for i, cid in enumerate(study.condition_ids)}
    for stage in study.stages.values():
        cand = stage.candidates
        if cand.mode == "all":
            ids: tuple[str, ...] | None = study.condition_ids
        elif cand.mode == "list":
            ids = cand.ids
        else:
            assert cand.gate is not None
            decision = decided.get(cand.gate)
            ids = (
                tuple(sorted(decision.promoted, key=lambda c: order.get(c, 10**9)))
                if decision
                else None
            )
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
            )
        )
    return Plan(study, tuple(plans))
