"""Applying a gate's rules to pooled cells: verdicts, reasons and the promoted set (pure).

No ledger and no files here: `evaluate_gate` takes the study, the gate's stage plan and run
records, so the same code serves `stagewise gate`, the report, `verify` on a bundle, the
sensitivity grid and the leave-one-cell-out stability check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from stagewise.analysis.agreement import HostPair, LeaveOneOut, host_agreement, kendalls_w
from stagewise.analysis.agreement import leave_one_cell_out as _loo
from stagewise.analysis.cells import Cell, Pool, ResultLike, StageCells, pool_cells
from stagewise.analysis.stats import PoolStats, pool_stats
from stagewise.analysis.thresholds import threshold_text
from stagewise.defaults import HEAD_DIM, VOCAB_SIZE
from stagewise.gates.registry import RuleCheck, get_rule
from stagewise.gates.results import Reason, Verdict
from stagewise.model_size import params_millions
from stagewise.study.model import Gate, Rule, Study


def describe_rule(rule: Rule) -> str:
    """`best_k k=1`, `keep roles=reference`, `max_gap_to_reference threshold=0.01 [greedy]`."""
    parts = [rule.rule]
    parts += [
        f"{k}={threshold_text(v) if k == 'threshold' and isinstance(v, float) else v}"
        for k, v in sorted(rule.params.items())
    ]
    if rule.conditions:
        parts.append("conditions=" + ",".join(rule.conditions))
    if rule.roles:
        parts.append("roles=" + ",".join(rule.roles))
    return " ".join(parts)


def rule_targets(rule: Rule, study: Study, among: Sequence[str]) -> tuple[str, ...]:
    """The conditions of `among` the rule targets (all of them when it names none)."""
    if not rule.targeted:
        return tuple(among)
    roles = {c.condition_id: c.role for c in study.conditions}
    return tuple(
        cid for cid in among if cid in rule.conditions or roles.get(cid) in set(rule.roles)
    )


@dataclass(frozen=True)
class Judgement:
    """Verdicts of one gate over one set of pooled statistics."""

    verdicts: dict[str, str]
    reasons: dict[str, tuple[Reason, ...]]
    checks: dict[str, tuple[tuple[int, RuleCheck], ...]]
    promoted: tuple[str, ...]

    def verdict(self, cid: str) -> Verdict:
        return Verdict(self.verdicts[cid], self.reasons[cid])


def judge(gate: Gate, stats: PoolStats, study: Study) -> Judgement:
    complete = stats.complete
    targeted_by: dict[str, list[tuple[int, RuleCheck]]] = {cid: [] for cid in complete}
    for i, rule in enumerate(gate.rules):
        spec = get_rule(rule.rule)
        targets = rule_targets(rule, study, complete)
        for cid, check in spec.fn(rule, stats, targets).items():
            targeted_by[cid].append((i, check))
    verdicts: dict[str, str] = {}
    reasons: dict[str, tuple[Reason, ...]] = {}
    promote = gate.kind == "promote"
    for cid in stats.pool.conditions:
        if cid not in targeted_by:
            missing = stats.pool.missing.get(cid, ())
            verdicts[cid] = "incomplete"
            reasons[cid] = (
                Reason(
                    "incomplete",
                    "incomplete: no result in "
                    + (", ".join(c.label for c in missing) or "any cell"),
                ),
            )
            continue
        lines = []
        for i, check in targeted_by[cid]:
            rule = gate.rules[i]
            if promote:
                word = "selected" if check.holds else "not selected"
            else:
                word = "holds" if check.holds else "fails"
            why = f" ({rule.reason})" if rule.reason else ""
            lines.append(
                Reason(
                    "rule",
                    f"{describe_rule(rule)}: {word}: {check.detail}{why}",
                    rule_index=i,
                    rule=rule.rule,
                    holds=check.holds,
                    declared=rule.reason,
                    description=describe_rule(rule),
                )
            )
        checks = targeted_by[cid]
        if promote:
            verdicts[cid] = "promote" if any(c.holds for _, c in checks) else "stop"
            if not checks:
                lines.append(Reason("no_rule", "no rule selects it"))
        elif not checks:
            verdicts[cid] = "untested"
            lines.append(Reason("no_rule", "no rule targets it"))
        else:
            verdicts[cid] = "pass" if all(c.holds for _, c in checks) else "fail"
        reasons[cid] = tuple(lines)
    good = "promote" if promote else "pass"
    promoted = tuple(cid for cid in stats.pool.conditions if verdicts[cid] == good)
    return Judgement(
        verdicts,
        reasons,
        {cid: tuple(v) for cid, v in targeted_by.items()},
        promoted,
    )


def gate_stage_cells(
    study: Study, gate: Gate, candidates: Mapping[str, tuple[str, ...] | None] | None = None
) -> list[StageCells]:
    """The pooled stages of a gate; `candidates` = the plan's candidates per stage, if known."""
    out = []
    for sid in gate.stages:
        stage = study.stages[sid]
        if candidates is not None and sid in candidates:
            cands = candidates[sid]
        elif stage.candidates.mode == "all":
            cands = study.condition_ids
        elif stage.candidates.mode == "list":
            cands = stage.candidates.ids
        else:
            cands = None
        out.append(StageCells(sid, stage.seeds, stage.hosts, cands))
    return out


def _whole(value: object) -> object:
    """A study-file number as an int when it is a whole one (TOML may write 8192.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def params_lookup(study: Study) -> Callable[[str], float | None]:
    """params_M of a condition from its depth and aspect ratio (None when not computable)."""
    vocab = _whole(study.runner.get("vocab_size", VOCAB_SIZE))
    head_dim = _whole(study.runner.get("head_dim", HEAD_DIM))

    conditions = {c.condition_id: c.params for c in study.conditions}

    def lookup(cid: str) -> float | None:
        params = conditions.get(cid)  # a run of a condition the matrix no longer holds: unknown
        if params is None:
            return None
        return params_millions(params.get("depth"), params.get("aspect_ratio"), vocab, head_dim)

    return lookup


@dataclass(frozen=True)
class Evaluation:
    """A gate evaluated over its pooled cells (not yet recorded anywhere)."""

    study: Study
    gate: Gate
    pool: Pool
    stats: PoolStats
    judgement: Judgement
    kendalls_w: float | None
    host_pairs: tuple[HostPair, ...]
    stability: tuple[LeaveOneOut, ...]

    @property
    def promoted(self) -> tuple[str, ...]:
        return self.judgement.promoted

    @property
    def cells(self) -> tuple[Cell, ...]:
        return self.pool.cells


def evaluate_pool(
    study: Study, gate: Gate, pool: Pool, *, with_stability: bool = True
) -> Evaluation:
    stats = pool_stats(pool, study.reference, params_lookup(study))
    judgement = judge(gate, stats, study)
    values = {cid: pool.values(cid) for cid in pool.complete}
    w = kendalls_w(pool.cells, values, pool.complete)
    pairs = tuple(host_agreement(stats.ranks, pool.complete)) if pool.complete else ()
    stability: tuple[LeaveOneOut, ...] = ()
    if with_stability and len(pool.cells) >= 2 and pool.complete:

        def recompute(cell: Cell) -> tuple[str, ...]:
            sub = pool.without(cell)
            return judge(gate, pool_stats(sub, study.reference), study).promoted

        stability = tuple(_loo(pool.cells, judgement.promoted, recompute))
    return Evaluation(study, gate, pool, stats, judgement, w, pairs, stability)


def evaluate_gate(
    study: Study,
    gate_id: str,
    runs: Iterable[ResultLike],
    candidates: Mapping[str, tuple[str, ...] | None] | None = None,
    *,
    gate: Gate | None = None,
    with_stability: bool = True,
) -> Evaluation:
    """Pool the gate's cells from `runs` and apply its rules."""
    gate = gate or study.gates[gate_id]
    pool = pool_cells(gate_stage_cells(study, gate, candidates), runs, study.condition_ids)
    return evaluate_pool(study, gate, pool, with_stability=with_stability)
