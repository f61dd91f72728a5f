"""Verdict confidence at a gate: every rule re-applied to blocked-bootstrap replicates of its cells.

`verdict_confidence` resamples the gate's host blocks and the seeds within them
(`analysis.confidence`), builds each replicate as a fresh `Pool` of relabelled cells and judges
it with the same `pool_stats` + `judge` the gate itself uses, so `p_verdict` (the share of
replicates whose verdict equals the observed one) covers every rule of the gate, including the
ones that compare conditions with each other (best_k, rank 1 in every cell). The intervals of each
condition's mean, mean gap and max gap to the reference come from the same draws, vectorised.

`gate_variance` gives the variance components of the gaps to the reference (`analysis.variance`);
`gates.seed_planning` plans a later gate's seeds from them.

All of it is descriptive: how the gate's numbers would move under other seeds and other host
blocks like the observed ones, not a significance test (docs/confidence.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from stagewise.analysis.cells import Cell, Observation, Pool
from stagewise.analysis.confidence import (
    DEFAULT_CONFIDENCE,
    DEFAULT_REPLICATES,
    BootstrapDesign,
    condition_intervals,
    draw,
)
from stagewise.analysis.stats import pool_stats
from stagewise.analysis.variance import VarianceComponents, decompose, decompose_pooled
from stagewise.errors import StudyError
from stagewise.gates.evaluate import Evaluation, judge
from stagewise.gates.results import ConditionConfidence, GateConfidence, GateResult, Intervals

DEFAULT_SEED = 0
# Replicate verdicts cost one pool_stats + judge each (about 2 us per condition-cell on one core),
# so past VERDICT_WORK (replicate x condition x cell) values the judged replicates shrink; a gate
# so large that fewer than MIN_VERDICT_REPLICATES would fit gets no p_verdict (said in its notes)
# rather than a `stagewise gate` of minutes (issue 18's 20,000-cell gate). The vectorised
# intervals hold [replicates, cells] arrays per condition, so their replicates shrink past
# INTERVAL_WORK values (memory), never below MIN_INTERVAL_REPLICATES. Counts used are reported.
VERDICT_REPLICATES = 1000
VERDICT_WORK = 500_000
MIN_VERDICT_REPLICATES = 100
INTERVAL_WORK = 8_000_000
MIN_INTERVAL_REPLICATES = 100
BOOTSTRAP_STAGE = "bootstrap"
FEW_HOSTS = 4  # below this many blocks the percentile interval under-covers (docs/confidence.md)


def check_confidence(value: float, option: str = "--confidence") -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.5 <= value < 1.0):
        raise StudyError(f"{option}: expected a level in [0.5, 1), e.g. 0.9, but got {value!r}")
    return float(value)


def check_seed(value: int, option: str = "--seed") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise StudyError(f"{option}: expected an integer in [0, 2**63), but got {value!r}")
    return value


def _verdict_replicates(replicates: int, n_conditions: int, n_cells: int) -> int:
    """Replicates to judge (0: the gate is too large for replicate verdicts)."""
    per = max(1, n_conditions * n_cells)
    wanted = min(replicates, VERDICT_REPLICATES)
    n = min(wanted, VERDICT_WORK // per)
    return n if n >= min(wanted, MIN_VERDICT_REPLICATES) else 0


def _interval_replicates(replicates: int, n_conditions: int, n_cells: int) -> int:
    per = max(1, n_conditions * n_cells)
    return min(replicates, max(MIN_INTERVAL_REPLICATES, INTERVAL_WORK // per))


def _draw_key(positions: Sequence[tuple[int, int, int]]) -> tuple[tuple[int, ...], ...]:
    """Replicates that drew the same cells into the same blocks, up to order, judge alike."""
    blocks: dict[int, list[int]] = {}
    for h, _, i in positions:
        blocks.setdefault(h, []).append(i)
    return tuple(sorted(tuple(sorted(v)) for v in blocks.values()))


def replicate_pool(
    pool: Pool, design: BootstrapDesign, positions: Sequence[tuple[int, int, int]]
) -> Pool:
    """A replicate as a fresh pool: drawn position (block h, draw s) becomes cell `b{h}/seed{s}`.

    Only the observed gate's complete conditions carry values, so the replicate judges the same
    set of conditions; the incomplete ones stay incomplete with their observed missing cells.
    The drawn observations are shared, not copied (statistics read them by the pool's cell keys;
    copying them was a third of the replicate loop), so `Observation.cell` keeps its origin.
    """
    cells = tuple(Cell(BOOTSTRAP_STAGE, s, f"b{h}") for h, s, _ in positions)
    drawn = [design.cells[i] for _, _, i in positions]
    observations: dict[str, dict[Cell, Observation]] = {}
    for cid in pool.complete:
        per = pool.observations[cid]
        observations[cid] = {cell: per[o] for cell, o in zip(cells, drawn, strict=True)}
    for cid in pool.conditions:
        observations.setdefault(cid, {})
    return Pool(cells, pool.conditions, observations, pool.complete, dict(pool.missing))


def _gaps_by_host(pool: Pool, cid: str, reference: str) -> dict[str, list[float]] | None:
    ref = pool.observations.get(reference, {})
    mine = pool.observations.get(cid, {})
    if any(c not in ref or c not in mine for c in pool.cells):
        return None
    out: dict[str, list[float]] = {}
    for c in pool.cells:
        out.setdefault(c.host, []).append(mine[c].val_bpb - ref[c].val_bpb)
    return out


def gate_variance(
    pool: Pool, reference: str
) -> tuple[VarianceComponents | None, dict[str, VarianceComponents]]:
    """Variance components of the gaps to the reference: pooled and per complete condition."""
    per: dict[str, VarianceComponents] = {}
    groups: dict[str, dict[str, list[float]]] = {}
    for cid in pool.complete:
        if cid == reference:
            continue
        gaps = _gaps_by_host(pool, cid, reference)
        if gaps is None:
            continue
        per[cid] = decompose(gaps)
        groups[cid] = gaps
    return (decompose_pooled(groups) if groups else None), per


def verdict_confidence(
    ev: Evaluation,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = DEFAULT_SEED,
    replicates: int = DEFAULT_REPLICATES,
) -> GateConfidence:
    """Intervals, p_verdict and decisive for every pooled condition of an evaluated gate."""
    confidence = check_confidence(confidence)
    check_seed(seed)
    pool = ev.pool
    complete = pool.complete
    pooled_var, per_var = gate_variance(pool, ev.study.reference)
    if not complete or not pool.cells:
        return GateConfidence(
            ev.gate.gate_id,
            confidence,
            seed,
            0,
            0,
            len({c.host for c in pool.cells}),
            len(pool.cells),
            ("no complete condition: nothing to resample",),
            tuple(
                ConditionConfidence(cid, ev.judgement.verdicts[cid], None, None, None, {}, None)
                for cid in pool.conditions
            ),
            None,
        )
    design = BootstrapDesign.from_cells(pool.cells)
    rng = np.random.default_rng(seed)
    n_interval = _interval_replicates(replicates, len(complete), len(pool.cells))
    draws = draw(design, n_interval, rng)
    values = {cid: pool.values(cid) for cid in complete}
    intervals = condition_intervals(design, values, complete, ev.study.reference, draws, confidence)
    n_verdict = min(n_interval, _verdict_replicates(replicates, len(complete), len(pool.cells)))
    notes = design.notes() + _few_blocks(len(design.hosts))
    if n_verdict == 0:
        notes += (
            f"p_verdict not computed: {len(complete)} conditions x {len(pool.cells)} cells "
            f"exceed what {MIN_VERDICT_REPLICATES} re-judged replicates may cost "
            f"({VERDICT_WORK:,} condition-cell values); the intervals use {n_interval} replicates",
        )
    observed = ev.judgement.verdicts
    counts: dict[str, dict[str, int]] = {cid: {} for cid in complete}
    seen: dict[tuple[tuple[int, ...], ...], dict[str, str]] = {}
    for b in range(n_verdict):
        positions = draws.positions(b)
        key = _draw_key(positions)
        verdicts = seen.get(key)
        if verdicts is None:
            rep = replicate_pool(pool, design, positions)
            verdicts = judge(ev.gate, pool_stats(rep, ev.study.reference), ev.study).verdicts
            seen[key] = verdicts
        for cid in complete:
            v = verdicts[cid]
            counts[cid][v] = counts[cid].get(v, 0) + 1
    rows = []
    for cid in pool.conditions:
        if cid not in counts:
            rows.append(ConditionConfidence(cid, observed[cid], None, None, None, {}, None))
            continue
        p = counts[cid].get(observed[cid], 0) / n_verdict if n_verdict else None
        rows.append(
            ConditionConfidence(
                cid,
                observed[cid],
                Intervals.of(intervals[cid], confidence),
                p,
                None if p is None else p >= confidence,
                dict(sorted(counts[cid].items())),
                per_var.get(cid),
            )
        )
    return GateConfidence(
        ev.gate.gate_id,
        confidence,
        seed,
        n_interval,
        n_verdict,
        len(design.hosts),
        len(pool.cells),
        notes,
        tuple(rows),
        pooled_var,
    )


def _few_blocks(hosts: int) -> tuple[str, ...]:
    if not 1 < hosts < FEW_HOSTS:
        return ()
    return (
        f"only {hosts} host blocks: a bootstrap over so few blocks understates the host-to-host "
        "spread, so intervals are too narrow and p_verdict too high (90% intervals covered the "
        "true gap in 73% of simulated 2-host x 2-seed gates; docs/confidence.md)",
    )


def attach(result: GateResult, conf: GateConfidence) -> GateResult:
    """The result with `interval`, `p_verdict`, `decisive` per condition and the gate summary."""
    conditions = tuple(
        replace(
            c,
            confidence=conf.condition(c.condition_id) or ConditionConfidence.absent(c.condition_id),
        )
        for c in result.conditions
    )
    return replace(result, conditions=conditions, confidence=conf)
