"""What every promotion policy shares: its parameters, the replay context, the registry.

A policy sees all replays at once (`ReplayContext`) and returns, per budget level, how many
times each condition was run there in each replay (`runs[l][r, c]`, almost always 0 or 1;
Hyperband's brackets can run a condition twice). The replay engine turns that into cost
(under the chosen cost model, restart or continue) and into which conditions reached the final
level. A policy whose trials do not all start at a condition's first level (Hyperband's later
brackets) also says where each trial started (`run_with_starts`), which the continue model needs. One small module per policy registers itself here.
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from stagewise.backtest.draw import Draws, LevelDraw
from stagewise.backtest.table import CurvesError

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ReplayContext:
    draws: Draws
    seed: int
    study: Any = None  # a loaded Study for the `study` policy, else None
    chunk: int = 0  # which block of replays this is (replays run in blocks)

    @property
    def replays(self) -> int:
        return self.draws.replays

    @property
    def n_conditions(self) -> int:
        return len(self.draws.table.conditions)

    @property
    def n_levels(self) -> int:
        return len(self.draws.levels)

    @property
    def cid_order(self) -> IntArray:
        """Each condition's position in condition_id order: the last tie-break."""
        names = self.draws.table.conditions
        order = sorted(range(len(names)), key=lambda i: names[i])
        out = np.empty(len(names), dtype=np.int64)
        out[order] = np.arange(len(names))
        return out

    def rng(self, policy: str) -> np.random.Generator:
        """A generator per policy: its draws do not depend on which other policies run."""
        return np.random.default_rng([self.seed, zlib.crc32(policy.encode()), self.chunk])

    def zeros(self) -> list[IntArray]:
        return [
            np.zeros((self.replays, self.n_conditions), dtype=np.int64) for _ in self.draws.levels
        ]


def best_first(level: LevelDraw, alive: BoolArray, cid_order: IntArray) -> IntArray:
    """Per replay, condition indices best first among `alive` (then the others).

    Best = lowest mean val_bpb over the level's cells; ties: lower mean rank over the cells
    (ranks among the alive conditions, 1 = lowest, ties share the lowest), then condition_id.
    """
    means = np.where(alive, level.means, np.inf)
    r, c = means.shape
    srt = np.sort(means, axis=1)
    tied = np.isfinite(srt[:, 1:]) & (srt[:, 1:] == srt[:, :-1])
    if tied.any():
        vals = np.where(alive[:, :, None], level.values, np.inf)
        lower = (vals[:, None, :, :] < vals[:, :, None, :]).sum(axis=2)  # [r, c, cell]
        mean_rank = np.where(alive, (1 + lower).mean(axis=2), np.inf)
    else:
        mean_rank = np.zeros((r, c))
    tiebreak = np.broadcast_to(cid_order, (r, c))
    order: IntArray = np.lexsort((tiebreak, mean_rank, means), axis=1).astype(np.int64)
    return order


def keep_best(
    level: LevelDraw, alive: BoolArray, keep: IntArray | int, cid_order: IntArray
) -> BoolArray:
    """The best `keep` (per replay, or one count for all) of the alive conditions."""
    order = best_first(level, alive, cid_order)
    r, c = alive.shape
    keep_arr = np.broadcast_to(np.asarray(keep, dtype=np.int64), (r,))
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.broadcast_to(np.arange(c), (r, c)), axis=1)
    kept: BoolArray = (position < keep_arr[:, None]) & alive
    return kept


class Policy(ABC):
    """A promotion policy with validated parameters; `run` is vectorised over replays."""

    name: ClassVar[str]
    defaults: ClassVar[Mapping[str, float | int]] = {}
    needs_study: ClassVar[bool] = False
    vectorised: ClassVar[bool] = True  # False: a per-replay loop (Optuna, study gates)

    def __init__(self, params: Mapping[str, str | float | int] | None = None) -> None:
        given = dict(params or {})
        unknown = set(given) - set(self.defaults)
        if unknown:
            allowed = ", ".join(self.defaults) or "none"
            raise CurvesError(
                f"--policies: {self.name} has no parameter {sorted(unknown)[0]!r}; "
                f"parameters: {allowed}"
            )
        self.params: dict[str, float | int] = {}
        for key, default in self.defaults.items():
            raw = given.get(key, default)
            try:
                value: float | int = int(raw) if isinstance(default, int) else float(raw)
            except (TypeError, ValueError):
                kind = "an integer" if isinstance(default, int) else "a number"
                raise CurvesError(
                    f"--policies: {self.name}:{key} must be {kind}, but got {raw!r}"
                ) from None
            self.params[key] = value
        self.check()

    def check(self) -> None:  # noqa: B027 - most policies accept any value of their params
        """Refuse bad parameter values (the message names the value)."""

    def unusable(self, n_levels: int) -> str | None:
        """Why this policy cannot run on a table with `n_levels` levels (None: it can)."""
        return None

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ";".join(f"{k}={v:g}" for k, v in self.params.items())

    @abstractmethod
    def run(self, ctx: ReplayContext) -> list[IntArray]:
        """runs[l][r, c]: how many times condition c ran at level l in replay r."""

    def run_with_starts(self, ctx: ReplayContext) -> tuple[list[IntArray], list[IntArray] | None]:
        """runs, and starts[l][r, c]: trials that began fresh at level l (None: each trial
        starts at the condition's first level and goes on while promoted)."""
        return self.run(ctx), None


REGISTRY: dict[str, type[Policy]] = {}


def register(cls: type[Policy]) -> type[Policy]:
    REGISTRY[cls.name] = cls
    return cls


class EtaPolicy(Policy):
    """A halving policy whose one parameter is the reduction factor eta (default 3, >= 2)."""

    defaults: ClassVar[Mapping[str, float | int]] = {"eta": 3}

    def check(self) -> None:
        eta = self.params["eta"]
        if eta < 2:
            raise CurvesError(f"--policies: {self.name}:eta must be >= 2, but got eta={eta:g}")


__all__ = [
    "REGISTRY",
    "BoolArray",
    "EtaPolicy",
    "FloatArray",
    "IntArray",
    "Policy",
    "ReplayContext",
    "best_first",
    "keep_best",
    "register",
]
