"""`study`: a study's own frozen staged protocol, replayed on the table's cells.

Each stage of the study is mapped to the table level nearest to its budget (on a log scale; the
mapping is stated in the result's notes). Per replay the stages are walked in the study's
order: a stage runs its candidates (all, a list, or what its feeding gate promoted in this
replay) on the replay's cells of its level, and every gate whose stages have all run is
evaluated by `stagewise.gates.evaluate.evaluate_gate`, the same code as `stagewise gate`, on
those cells. Stages that map to the same level share that level's cells and runs (a condition
run there twice is one run and is paid for once). Conditions of the table that the study's
matrix lacks are never run by this policy. A per-replay loop (not vectorised).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from stagewise.backtest.policies.base import IntArray, Policy, ReplayContext, register
from stagewise.backtest.table import CurvesError


@dataclass(frozen=True)
class _Result:
    """One replay cell of one condition, shaped like a ledger run record for the gate code."""

    stage: str
    condition_id: str
    seed: int
    host: str
    val_bpb: float
    status: str = "succeeded"
    training_seconds: float | None = None
    total_tokens_M: float | None = None
    num_params_M: float | None = None


def stage_levels(study: Any, budgets: tuple[float, ...]) -> dict[str, int]:
    """Each stage's table level: the nearest budget on a log scale (ties: the longer)."""
    out = {}
    for sid, stage in study.stages.items():
        if stage.budget_seconds <= 0:
            raise CurvesError(
                f"--study {study.root}: stage {sid} has no wall-clock budget (a token or step "
                "budget); a curves table is indexed by budget_seconds, so it cannot be mapped"
            )
        dist = [abs(math.log(b / stage.budget_seconds)) for b in budgets]
        best = min(range(len(budgets)), key=lambda i: (round(dist[i], 12), -i))
        out[sid] = best
    return out


@register
class StudyGates(Policy):
    name = "study"
    needs_study = True
    vectorised = False

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.notes: tuple[str, ...] = ()

    def run(self, ctx: ReplayContext) -> list[IntArray]:
        from stagewise.gates.evaluate import evaluate_gate

        study = ctx.study
        if study is None:
            raise CurvesError(
                "--policies: `study` needs --study DIR (the study whose gates to replay)"
            )
        table = ctx.draws.table
        if not table.paired:
            raise CurvesError(
                f"--study: the table {table.source} is unpaired (no seed shared across "
                "conditions); the `study` policy replays gates on shared seeds, so it needs a "
                "paired table"
            )
        if table.unit != "seconds":
            raise CurvesError(
                f"--study: the table {table.source} counts its budget in {table.unit}; the "
                "`study` policy maps stages by budget_seconds, so it needs a seconds table"
            )
        c_index = {c: i for i, c in enumerate(table.conditions)}
        missing = [c for c in study.condition_ids if c not in c_index]
        if missing:
            raise CurvesError(
                f"--study {study.root}: condition {missing[0]!r} of its matrix is not in the curves "
                f"table {table.source}; expected every study condition in the table"
            )
        levels = stage_levels(study, table.budgets)
        self.notes = tuple(
            f"stage {sid} ({study.stages[sid].budget_seconds:g}s) -> level {table.budgets[li]:g}s"
            for sid, li in levels.items()
        ) + tuple(
            f"{c} is in the table but not in the study's matrix: never run by `study`"
            for c in table.conditions
            if c not in set(study.condition_ids)
        )
        if (len(table.budgets) - 1) not in levels.values():
            raise CurvesError(
                f"--study {study.root}: no stage maps to the final level {table.budgets[-1]:g}s "
                f"({'; '.join(self.notes)}); the policy would never run the final level"
            )
        runs = ctx.zeros()
        hosts = table.hosts
        for r in range(ctx.replays):
            derived, records = self._replay_cells(study, ctx, r, levels, hosts, c_index)
            promoted: dict[str, tuple[str, ...]] = {}
            candidates: dict[str, tuple[str, ...]] = {}
            ran: set[str] = set()
            at_level: list[set[str]] = [set() for _ in table.budgets]
            for sid, stage in derived.stages.items():
                mode = stage.candidates.mode
                if mode == "all":
                    cands: tuple[str, ...] = derived.condition_ids
                elif mode == "list":
                    cands = stage.candidates.ids
                else:
                    cands = promoted.get(stage.candidates.gate, ())
                candidates[sid] = cands
                at_level[levels[sid]].update(cands)
                ran.add(sid)
                for gid, gate in derived.gates.items():
                    if gid in promoted or not set(gate.stages) <= ran:
                        continue
                    rows = [
                        x
                        for s in gate.stages
                        for x in records[s]
                        if x.condition_id in candidates[s]
                    ]
                    ev = evaluate_gate(derived, gid, rows, dict(candidates), with_stability=False)
                    promoted[gid] = ev.promoted
            for li, conds in enumerate(at_level):
                for cid in conds:
                    runs[li][r, c_index[cid]] = 1
        return runs

    @staticmethod
    def _replay_cells(
        study: Any,
        ctx: ReplayContext,
        r: int,
        levels: dict[str, int],
        hosts: tuple[str, ...],
        c_index: dict[str, int],
    ) -> tuple[Any, dict[str, list[_Result]]]:
        """The study with each stage's seeds and hosts set to the replay's cells of its level.

        Cells are (host, ordinal within host); when hosts got different numbers of cells the
        cells become one pseudo-host each (the gate rules read cells, not host names).
        """
        stages = {}
        records: dict[str, list[_Result]] = {}
        for sid, stage in study.stages.items():
            lv = ctx.draws.levels[levels[sid]]
            h_idx = lv.hosts[r]
            per_host: dict[str, list[int]] = {}
            for j, h in enumerate(h_idx):
                per_host.setdefault(hosts[int(h)], []).append(j)
            equal = len({len(v) for v in per_host.values()}) == 1
            cells: list[tuple[str, int, int]] = []  # (host, seed ordinal, column j)
            if equal:
                for host, cols in per_host.items():
                    cells += [(host, k, j) for k, j in enumerate(cols)]
                seeds = tuple(range(len(next(iter(per_host.values())))))
                names = tuple(per_host)
            else:
                cells = [(f"cell{j}", 0, j) for j in range(lv.n_cells)]
                seeds, names = (0,), tuple(f"cell{j}" for j in range(lv.n_cells))
            stages[sid] = dataclasses.replace(stage, seeds=seeds, hosts=names)
            values = lv.values[r]
            records[sid] = [
                _Result(sid, cid, seed, host, float(values[c_index[cid], j]))
                for cid in study.condition_ids
                for host, seed, j in cells
            ]
        return dataclasses.replace(study, stages=stages), records
