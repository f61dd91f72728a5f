"""Pooled host-seed cells: which results a gate reads, and which conditions are complete.

A gate pools one or more stages of the same budget; every (stage, seed, host) of those stages is
a cell. A condition is complete when it has a succeeded run with a finite val_bpb in every cell;
only complete conditions are ranked and judged, the others are named with their missing cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class RunKeyLike(Protocol):
    """Which cell a run record fills, its status and training time (the ledger's RunRecord
    satisfies it); the analysis's protocols add what each of them reads beyond this."""

    @property
    def stage(self) -> str: ...
    @property
    def condition_id(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def training_seconds(self) -> float | None: ...


class ResultLike(RunKeyLike, Protocol):
    """What the analysis needs from a run record (the ledger's RunRecord satisfies it)."""

    @property
    def val_bpb(self) -> float | None: ...
    @property
    def total_tokens_M(self) -> float | None: ...
    @property
    def num_params_M(self) -> float | None: ...


class Cell(NamedTuple):
    """One host-seed cell of a pooled stage.

    A named tuple, not a dataclass: every statistic of a gate is a dict keyed by cells, and a
    dataclass's Python-level __hash__/__eq__ were most of a 20,000-cell gate's time (issue 18).
    """

    stage: str
    seed: int
    host: str

    @property
    def label(self) -> str:
        return f"{self.host}/seed{self.seed}"

    def to_dict(self) -> dict[str, str | int]:
        return {"host": self.host, "seed": self.seed}


@dataclass(frozen=True)
class Observation:
    """One usable result: a succeeded run with a finite val_bpb."""

    condition_id: str
    cell: Cell
    val_bpb: float
    training_seconds: float | None
    total_tokens_M: float | None
    num_params_M: float | None


@dataclass(frozen=True)
class StageCells:
    """What the pooling needs to know about one stage: its cells and its planned candidates."""

    stage: str
    seeds: tuple[int, ...]
    hosts: tuple[str, ...]
    candidates: tuple[str, ...] | None  # None while the feeding gate is undecided

    def cells(self) -> tuple[Cell, ...]:
        return tuple(Cell(self.stage, seed, host) for seed in self.seeds for host in self.hosts)


@dataclass(frozen=True)
class Pool:
    """The pooled cells of a gate and the usable results in them."""

    cells: tuple[Cell, ...]
    conditions: tuple[str, ...]  # every condition the pooled stages plan, in order
    observations: dict[str, dict[Cell, Observation]]
    complete: tuple[str, ...]
    missing: dict[str, tuple[Cell, ...]]  # incomplete condition -> the cells without a result

    def values(self, condition_id: str) -> dict[Cell, float]:
        return {c: o.val_bpb for c, o in self.observations.get(condition_id, {}).items()}

    def without(self, cell: Cell) -> Pool:
        """The same pool with one cell left out (for leave-one-cell-out stability)."""
        cells = tuple(c for c in self.cells if c != cell)
        obs = {
            cid: {c: o for c, o in per.items() if c != cell}
            for cid, per in self.observations.items()
        }
        return _finish(cells, self.conditions, obs)


def usable(run: ResultLike) -> bool:
    return (
        run.status == "succeeded" and run.val_bpb is not None and math.isfinite(float(run.val_bpb))
    )


def pool_cells(
    stages: Sequence[StageCells],
    runs: Iterable[ResultLike],
    condition_order: Sequence[str] = (),
) -> Pool:
    """Collect the cells of `stages` and the usable results in them.

    The pooled conditions are those every stage plans (the paper's 10-minute gate pools
    stage1b and stage1c over the nine conditions present in both). A stage whose candidates are
    not known yet does not restrict them; when no stage knows its candidates, the conditions with
    results are pooled.
    """
    cells = tuple(c for st in stages for c in st.cells())
    cell_set = set(cells)
    known = [set(st.candidates) for st in stages if st.candidates is not None]
    obs: dict[str, dict[Cell, Observation]] = {}
    for run in runs:
        if not usable(run):
            continue
        cell = Cell(run.stage, int(run.seed), run.host)
        if cell not in cell_set:
            continue
        assert run.val_bpb is not None
        obs.setdefault(run.condition_id, {})[cell] = Observation(
            run.condition_id,
            cell,
            float(run.val_bpb),
            run.training_seconds,
            run.total_tokens_M,
            run.num_params_M,
        )
    if known:
        pooled = set.intersection(*known)
    else:
        pooled = set(obs)
    order = {cid: i for i, cid in enumerate(condition_order)}
    conditions = tuple(sorted(pooled, key=lambda c: (order.get(c, len(order)), c)))
    return _finish(cells, conditions, {c: obs.get(c, {}) for c in conditions})


def _finish(
    cells: tuple[Cell, ...],
    conditions: tuple[str, ...],
    obs: dict[str, dict[Cell, Observation]],
) -> Pool:
    complete = []
    missing: dict[str, tuple[Cell, ...]] = {}
    for cid in conditions:
        absent = tuple(c for c in cells if c not in obs.get(cid, {}))
        if absent or not cells:
            missing[cid] = absent
        else:
            complete.append(cid)
    return Pool(cells, conditions, obs, tuple(complete), missing)
