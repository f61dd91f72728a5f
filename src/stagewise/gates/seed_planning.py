"""Seed planning: how many seeds per host (and hosts) a gate needs, from an earlier gate's cells.

A gate's frozen threshold is decided only if its cells are enough to tell the observed gap from
the threshold. `seeds_for` plans them from the variance components observed at an earlier gate
(`gates.confidence.gate_variance`: the host-to-host and seed-to-seed spread of the gaps to the
reference) with the pure counts of `analysis.seed_plan`: one `SeedRow` per threshold rule and
targeted condition (the seeds per host that decide the threshold at `confidence` with `power`, or
more hosts when the host component alone is too wide), and for a promote gate's selecting rules
(best_k, rank 1 in every cell) the probability of selecting the best. `seed_plan` picks the
source gate (`--from`, else the nearest decided upstream gate with recorded cells, else the gate
itself) for `stagewise plan DIR --seeds-for GATE` and the advice of `stagewise freeze`.

Descriptive, like the verdict confidence it builds on: what other seeds and host blocks like the
observed ones would likely show, not a guarantee (docs/confidence.md, "Seed planning").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from stagewise.analysis.confidence import DEFAULT_CONFIDENCE
from stagewise.analysis.seed_plan import (
    MAX_SEEDS_PER_HOST,
    SeedAdvice,
    p_correct_selection,
    plan_max_gap,
    plan_mean_gap,
)
from stagewise.analysis.variance import VarianceComponents
from stagewise.errors import StudyError
from stagewise.gates.confidence import DEFAULT_SEED, check_confidence, check_seed, gate_variance
from stagewise.gates.evaluate import Evaluation, describe_rule, evaluate_gate, rule_targets
from stagewise.gates.registry import get_rule
from stagewise.gates.results import finite
from stagewise.json_types import JsonObject
from stagewise.ledger import Ledger
from stagewise.plan import build_plan
from stagewise.study.model import Gate, Study


@dataclass(frozen=True)
class SeedRow:
    """One threshold rule x targeted condition (or one selecting rule of a promote gate)."""

    gate: str
    condition_id: str
    rule: str
    rule_index: int
    description: str
    threshold: float | None
    observed_gap: float | None
    statistic: str
    advice: SeedAdvice | None
    planned_hosts: int
    planned_seeds_per_host: int
    p_correct_selection: float | None = None
    seeds_per_host: int | None = None
    hosts: int | None = None
    achievable: bool = False
    note: str = ""
    sigma_d: float | None = None  # sd of one cell's gap at the source gate (host + seed)

    @property
    def recommended_cells(self) -> int | None:
        if self.seeds_per_host is None or self.hosts is None:
            return None
        return self.seeds_per_host * self.hosts

    @property
    def short_of_plan(self) -> bool:
        """Whether the plan has fewer cells than recommended (the freeze advice)."""
        cells = self.recommended_cells
        planned = self.planned_hosts * self.planned_seeds_per_host
        if not self.achievable:
            return True
        return cells is not None and cells > planned

    def to_json(self) -> JsonObject:
        a = self.advice
        return {
            "gate": self.gate,
            "condition_id": self.condition_id,
            "rule": self.rule,
            "threshold": self.threshold,
            "observed_gap": finite(self.observed_gap),
            "sigma_d": finite(self.sigma_d),
            "seeds_per_host": self.seeds_per_host,
            "hosts": self.hosts,
            "achievable": self.achievable,
            "rule_index": self.rule_index,
            "description": self.description,
            "statistic": self.statistic,
            "min_hosts": a.min_hosts if a is not None else None,
            "simulated_power": a.simulated_power if a is not None else None,
            "p_correct_selection": self.p_correct_selection,
            "planned_hosts": self.planned_hosts,
            "planned_seeds_per_host": self.planned_seeds_per_host,
            "short_of_plan": self.short_of_plan,
            "note": self.note,
        }


@dataclass(frozen=True)
class SeedPlan:
    gate: str
    from_gate: str
    confidence: float
    power: float
    variance: VarianceComponents | None
    planned_hosts: int
    planned_seeds_per_host: int
    rows: tuple[SeedRow, ...]
    notes: tuple[str, ...]

    @property
    def short(self) -> tuple[SeedRow, ...]:
        return tuple(r for r in self.rows if r.short_of_plan)

    def to_json(self) -> JsonObject:
        return {
            "gate": self.gate,
            "from": self.from_gate,
            "confidence": self.confidence,
            "power": self.power,
            "variance": self.variance.to_json() if self.variance is not None else None,
            "planned_hosts": self.planned_hosts,
            "planned_seeds_per_host": self.planned_seeds_per_host,
            "rows": [r.to_json() for r in self.rows],
            "notes": list(self.notes),
        }


def upstream_gates(study: Study, gate_id: str) -> list[str]:
    """Gates feeding `gate_id`'s stages through `candidates = { gate = ... }`, nearest first."""
    out: list[str] = []
    frontier = [gate_id]
    while frontier:
        nxt: list[str] = []
        for g in frontier:
            for sid in study.gates[g].stages:
                src = study.stages[sid].candidates
                if src.mode == "gate" and src.gate and src.gate not in out and src.gate != gate_id:
                    out.append(src.gate)
                    nxt.append(src.gate)
        frontier = nxt
    return out


def planned_layout(study: Study, gate: Gate) -> tuple[int, int]:
    """(hosts, seeds per host) of the gate's pooled stages as planned."""
    hosts = {h for sid in gate.stages for h in study.stages[sid].hosts}
    cells = sum(len(study.stages[sid].seeds) * len(study.stages[sid].hosts) for sid in gate.stages)
    n_hosts = max(1, len(hosts))
    return n_hosts, max(1, cells // n_hosts)


def _selection_seeds(
    means: dict[str, float], vc: VarianceComponents, hosts: int, power: float, seed: int
) -> tuple[int | None, float | None]:
    for n in range(1, MAX_SEEDS_PER_HOST + 1):
        p = p_correct_selection(means, vc, hosts, n, seed)
        if p is None:
            return None, None
        if p >= power:
            return n, p
    return None, None


def seeds_for(
    study: Study,
    gate_id: str,
    source: Evaluation,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = 0.9,
    seed: int = DEFAULT_SEED,
) -> SeedPlan:
    """Seeds per host (and hosts) for every threshold rule of `gate_id`, from `source`'s cells."""
    confidence = check_confidence(confidence)
    power = check_confidence(power, "--power")
    check_seed(seed)
    gate = study.gates[gate_id]
    hosts, seeds_per_host = planned_layout(study, gate)
    pool = source.pool
    reference = study.reference
    pooled, _per = gate_variance(pool, reference)
    stats = source.stats.conditions
    notes: list[str] = [
        f"variance from gate {source.gate.gate_id} ({len(pool.cells)} cells, "
        f"{len({c.host for c in pool.cells})} hosts), pooled over its non-reference conditions"
    ]
    if pooled is not None and pooled.df_seed == 0:
        notes.append("one seed per host at the source gate: the seed component is planned as 0")
    rows: list[SeedRow] = []
    vc = pooled if pooled is not None else VarianceComponents(0, 0, None, None, 0, 0, None, None, 0)
    sigma_d = (
        math.sqrt((vc.var_host or 0.0) + (vc.var_seed or 0.0))
        if vc.var_host is not None or vc.var_seed is not None
        else None
    )
    for i, rule in enumerate(gate.rules):
        spec = get_rule(rule.rule)
        targets = rule_targets(rule, study, pool.complete)
        if spec.threshold_param is not None:
            t = float(rule.params[spec.threshold_param])

            # The row of a condition the source gate gives nothing to plan from.
            unplanned = SeedRow(
                gate_id,
                "",
                rule.rule,
                i,
                describe_rule(rule),
                t,
                None,
                "",
                None,
                hosts,
                seeds_per_host,
                sigma_d=sigma_d,
            )
            for cid in (c for c in rule.conditions if c not in targets):
                note = f"no complete cells at {source.gate.gate_id}: nothing to plan from"
                rows.append(
                    replace(unplanned, condition_id=cid, statistic=str(spec.statistic), note=note)
                )
            for cid in targets:
                if cid == reference and spec.statistic != "gap_from_best":
                    continue
                s = stats[cid]
                if spec.statistic == "gap_from_best":
                    gap, statistic = s.gap_from_best, "mean_gap"
                    extra = "gap from the best planned as a mean gap; "
                elif spec.statistic == "max_gap_to_reference":
                    # The rule reads the worst cell: that is the observed gap. Cells are
                    # simulated around the mean gap (their centre), said in the note.
                    gap, statistic = s.max_gap_to_reference, "max_gap"
                    centre = s.mean_gap_to_reference
                    extra = (
                        f"cells simulated around the mean gap {centre:.6f}; "
                        if centre is not None
                        else ""
                    )
                else:
                    gap, statistic, extra = s.mean_gap_to_reference, "mean_gap", ""
                if gap is None:
                    note = "no gap to the reference at the source gate"
                    rows.append(
                        replace(unplanned, condition_id=cid, statistic=statistic, note=note)
                    )
                    continue
                if statistic == "max_gap":
                    centre = s.mean_gap_to_reference
                    assert centre is not None  # a max gap exists only beside a mean gap
                    advice = plan_max_gap(centre, t, vc, hosts, power, seed, observed_max=gap)
                else:
                    advice = plan_mean_gap(gap, t, vc, hosts, confidence, power, seed)
                    if not advice.achievable and advice.min_hosts is not None:
                        more = plan_mean_gap(gap, t, vc, advice.min_hosts, confidence, power, seed)
                        extra += (
                            f"no seed count suffices with {hosts} hosts (the host component "
                            f"alone is too wide): {advice.min_hosts} hosts with "
                            f"{more.seeds_per_host} seeds per host would; "
                        )
                rows.append(
                    SeedRow(
                        gate_id,
                        cid,
                        rule.rule,
                        i,
                        describe_rule(rule),
                        t,
                        gap,
                        statistic,
                        advice,
                        hosts,
                        seeds_per_host,
                        None,
                        advice.seeds_per_host,
                        hosts if advice.achievable else advice.min_hosts,
                        advice.achievable,
                        "; ".join(x for x in (extra.rstrip("; "), advice.note) if x),
                        sigma_d,
                    )
                )
        elif gate.kind == "promote" and rule.rule in ("best_k", "rank_first_in_all_cells"):
            clean = {
                cid: float(mean) for cid in targets if (mean := stats[cid].mean_val_bpb) is not None
            }
            if len(clean) < 2:
                continue
            best = min(clean, key=lambda c: (clean[c], c))
            second = sorted(clean.values())[1]
            p_now = p_correct_selection(clean, vc, hosts, seeds_per_host, seed)
            n, _p = _selection_seeds(clean, vc, hosts, power, seed)
            rows.append(
                SeedRow(
                    gate_id,
                    best,
                    rule.rule,
                    i,
                    describe_rule(rule),
                    None,
                    second - clean[best],
                    "selection",
                    None,
                    hosts,
                    seeds_per_host,
                    p_now,
                    n,
                    hosts if n is not None else None,
                    n is not None,
                    "probability that the best mean at the source gate is also the best "
                    "observed with the planned cells (simulated)",
                    sigma_d,
                )
            )
    return SeedPlan(
        gate_id,
        source.gate.gate_id,
        confidence,
        power,
        pooled,
        hosts,
        seeds_per_host,
        tuple(rows),
        tuple(notes),
    )


def _source_gate(
    study: Study, ledger: Ledger, gate_id: str, candidates: Any
) -> tuple[Evaluation, str]:
    """The nearest decided upstream gate with cells, else the gate itself; (evaluation, note)."""
    upstream = upstream_gates(study, gate_id)
    runs = ledger.runs()
    skipped = []
    for g in upstream:
        if ledger.active_decision(g) is None:
            skipped.append(f"{g} (undecided)")
            continue
        ev = evaluate_gate(study, g, runs, candidates, with_stability=False)
        if _has_gaps(ev):
            return ev, f"--from {g}: the nearest decided upstream gate with cells"
        skipped.append(f"{g} (no recorded cells: published summary or decided outside the tool)")
    ev = evaluate_gate(study, gate_id, runs, candidates, with_stability=False)
    if _has_gaps(ev):
        why = f"; upstream: {', '.join(skipped)}" if skipped else ""
        return ev, f"--from {gate_id}: its own cells (no decided upstream gate has cells{why})"
    raise StudyError(
        f"gate {gate_id}: no gate to plan from: "
        + (", ".join(skipped) if skipped else "it has no upstream gate")
        + f", and {gate_id} has no complete cells with the reference yet; variance and seed "
        "counts need recorded cells (pass --from GATE naming a gate that has them)"
    )


def _has_gaps(ev: Evaluation) -> bool:
    ref = ev.study.reference
    return ref in ev.pool.complete and any(c != ref for c in ev.pool.complete)


def seed_plan(
    study: Study,
    ledger: Ledger,
    gate_id: str,
    *,
    from_gate: str | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    power: float = 0.9,
    seed: int = DEFAULT_SEED,
) -> SeedPlan:
    """`stagewise plan DIR --seeds-for GATE`: seeds_for from the recorded cells of `from_gate`."""
    for name, g in (("--seeds-for", gate_id), ("--from", from_gate)):
        if g is not None and g not in study.gates:
            raise StudyError(f"{name}: unknown gate {g!r}; gates: {', '.join(study.gates)}")
    check_confidence(confidence)
    check_confidence(power, "--power")
    check_seed(seed)
    candidates = build_plan(study, ledger).candidates
    if from_gate is not None:
        source = evaluate_gate(study, from_gate, ledger.runs(), candidates, with_stability=False)
        if not _has_gaps(source):
            raise StudyError(
                f"--from {from_gate}: no complete cells with the reference "
                f"{study.reference} and another condition (a gate decided from a published "
                "summary has none); name a gate with recorded cells"
            )
        note = f"--from {from_gate}"
    else:
        source, note = _source_gate(study, ledger, gate_id, candidates)
    out = seeds_for(study, gate_id, source, confidence=confidence, power=power, seed=seed)
    return replace(out, notes=(note, *out.notes))
