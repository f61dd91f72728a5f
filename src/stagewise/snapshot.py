"""One typed, immutable record of a study and its ledger at one moment, read by every renderer.

`StudySnapshot.read(study, ledger)` reads the ledger once (runs, freezes, decisions, events, the
chain and integrity checks) and builds the plan once from those records. Everything the readers
show is then derived from the snapshot alone, never from the ledger again:

- per gate (`GateSnapshot`): its freezes, decisions, the active one, the changes since its
  freeze, its succeeded results, and its analysis: the gate evaluated once (`GateResult`, with
  verdict confidence) and the threshold-sensitivity grid of that same evaluation;
- the budget (`BudgetResult`) of the plan and the runs;
- where the study stands (`status.status_of`).

The analyses are computed on first use and kept (`functools.cached_property`): `stagewise
status` reads a snapshot without paying for the gates' bootstrap, the report and the bundle
compute each gate once. The report, the bundle, verify (over a ledger rebuilt from a bundle),
the MLflow export and the study driver all take a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from stagewise.analysis.cells import ResultLike
from stagewise.errors import StagewiseError
from stagewise.gates.budget import BudgetResult, budget_of
from stagewise.gates.decide import gate_result
from stagewise.gates.evaluate import Evaluation, evaluate_gate
from stagewise.gates.freeze import RecipeSplit, changes_against, split_by_recipe
from stagewise.gates.results import GateResult
from stagewise.gates.sensitivity import SensitivityGrid, frozen_sha256, sensitivity_of
from stagewise.ledger import DecisionRecord, Event, FreezeRecord, Ledger, RunRecord
from stagewise.plan import Plan, build_plan
from stagewise.study.model import Gate, Study

__all__ = ["GateSnapshot", "StudySnapshot"]


@dataclass(frozen=True)
class _Records:
    """The plan's view of the records already read (active decisions, succeeded runs)."""

    active: Mapping[str, DecisionRecord | None]
    all_runs: tuple[RunRecord, ...]

    def active_decision(self, gate: str) -> DecisionRecord | None:
        return self.active.get(gate)

    def runs(self, stage: str | None = None, status: str | None = None) -> list[RunRecord]:
        return [
            r
            for r in self.all_runs
            if (stage is None or r.stage == stage) and (status is None or r.status == status)
        ]


def _active(decisions: Sequence[DecisionRecord]) -> DecisionRecord | None:
    active = [d for d in decisions if d.active]  # as Ledger.active_decision: the last active
    return active[-1] if active else None


def _succeeded_cells(study: Study, runs: Sequence[RunRecord], gate: Gate) -> tuple[RunRecord, ...]:
    """Succeeded results of the gate's stages, by host, seed and matrix order."""
    order = {cid: i for i, cid in enumerate(study.condition_ids)}
    out = [
        r
        for r in runs
        if r.stage in gate.stages and r.status == "succeeded" and r.val_bpb is not None
    ]
    out.sort(key=lambda r: (r.host, r.seed, order.get(r.condition_id, 10**9)))
    return tuple(out)


@dataclass(frozen=True)
class GateSnapshot:
    """One gate of the snapshot: its records, and its analysis computed once on first use."""

    study: Study
    plan: Plan
    runs: tuple[RunRecord, ...]
    gate: Gate
    freezes: tuple[FreezeRecord, ...]
    decisions: tuple[DecisionRecord, ...]  # every decision, withdrawn ones included
    active: DecisionRecord | None
    cells: tuple[RunRecord, ...]  # succeeded results of the gate's stages
    files_only: bool  # a ledger rebuilt from a bundle: recipes compared by the study files

    @property
    def gate_id(self) -> str:
        return self.gate.gate_id

    @property
    def current_freeze(self) -> FreezeRecord | None:
        return self.freezes[-1] if self.freezes else None

    @property
    def changes_since_freeze(self) -> tuple[str, ...]:
        """How the gate in study.toml differs from its current freeze (empty when it does not,
        or when it was never frozen); an error reading the freeze is said as a change."""
        changes = self._changes
        return (str(changes),) if isinstance(changes, StagewiseError) else changes

    def require_changes_since_freeze(self) -> tuple[str, ...]:
        """`changes_since_freeze`, raising the error that kept them from being compared."""
        changes = self._changes
        if isinstance(changes, StagewiseError):
            raise changes
        return changes

    @cached_property
    def _changes(self) -> tuple[str, ...] | StagewiseError:
        if self.current_freeze is None:
            return ()
        try:
            return tuple(
                changes_against(
                    self.study,
                    self.gate_id,
                    self.current_freeze,
                    self.plan.candidates,
                    files_only=self.files_only,
                )
            )
        except StagewiseError as exc:
            return exc

    @cached_property
    def _split(self) -> RecipeSplit | None:
        """The results the gate counts under its current freeze (only those of the frozen
        recipes), as `stagewise gate` splits them; None for a gate never frozen."""
        if self.current_freeze is None:
            return None
        return split_by_recipe(self.gate, self.freezes, self.runs)

    def _evaluate(self, runs: Iterable[ResultLike]) -> Evaluation | StagewiseError:
        try:
            return evaluate_gate(self.study, self.gate_id, runs, self.plan.candidates)
        except StagewiseError as exc:
            return exc

    @cached_property
    def _evaluation(self) -> Evaluation | StagewiseError:
        """The gate over the results it counts, evaluated once."""
        split = self._split
        return self._evaluate(self.runs if split is None else split.counted)

    @cached_property
    def _evaluation_of_all(self) -> Evaluation | StagewiseError:
        """Over every result (what the sensitivity grid sweeps): the same evaluation unless
        the freeze leaves some results out."""
        split = self._split
        if split is None or not (split.superseded or split.foreign):
            return self._evaluation
        return self._evaluate(self.runs)

    @cached_property
    def _result(self) -> GateResult | StagewiseError:
        ev = self._evaluation
        if isinstance(ev, StagewiseError):
            return ev
        split = self._split
        left_out = () if split is None else split.superseded + split.foreign
        try:
            return gate_result(ev, freeze=self.current_freeze, not_counted=left_out)
        except StagewiseError as exc:
            return exc

    @property
    def result(self) -> GateResult | None:
        """The gate evaluated read-only over the pooled cells (None when it cannot be)."""
        return None if isinstance(self._result, StagewiseError) else self._result

    @property
    def result_note(self) -> str:
        """Why `result` is None ("" when it is not)."""
        return str(self._result) if isinstance(self._result, StagewiseError) else ""

    @cached_property
    def _sensitivity(self) -> tuple[SensitivityGrid | None, str]:
        try:
            sha = frozen_sha256(
                self.study,
                self.gate_id,
                self.current_freeze,
                self.plan.candidates,
                files_only=self.files_only,
            )
        except StagewiseError as exc:
            return None, str(exc)
        ev = self._evaluation_of_all
        if isinstance(ev, StagewiseError):
            return None, str(ev)
        grid = sensitivity_of(ev, sha)
        return (grid, "") if grid.rows else (None, "")

    @property
    def sensitivity(self) -> SensitivityGrid | None:
        """The threshold-sensitivity grid of the same evaluation (None: no threshold rule, or
        not computable)."""
        return self._sensitivity[0]

    @property
    def sensitivity_note(self) -> str:
        return self._sensitivity[1]


@dataclass(frozen=True)
class StudySnapshot:
    """A study and its ledger at one moment: records read once, analyses derived once."""

    study: Study
    plan: Plan
    runs: tuple[RunRecord, ...]
    freezes: tuple[FreezeRecord, ...]  # every gate's, in ledger order
    decisions: tuple[DecisionRecord, ...]  # every gate's, withdrawn ones included
    events: tuple[Event, ...]
    head: str
    schema_version: int
    chain_problems: tuple[str, ...]  # the event chain's own links
    integrity_problems: tuple[str, ...]  # the links, then every table row against the chain
    rebuilt: bool = False  # the ledger was rebuilt from a bundle (verify)
    # sha256 -> canonical text of every resolved recipe the ledger holds (the bundle's recipes/)
    recipe_texts: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, study: Study, ledger: Ledger) -> StudySnapshot:
        runs = tuple(ledger.runs())
        freezes = tuple(ledger.freezes())
        decisions = tuple(ledger.decisions())
        active = {g: _active([d for d in decisions if d.gate == g]) for g in study.gates}
        return cls(
            study=study,
            plan=build_plan(study, _Records(active, runs)),
            runs=runs,
            freezes=freezes,
            decisions=decisions,
            events=tuple(ledger.events()),
            head=ledger.head,
            schema_version=ledger.schema_version,
            chain_problems=tuple(ledger.verify_chain()),
            integrity_problems=tuple(ledger.integrity_problems(runs, freezes, decisions)),
            rebuilt=ledger.rebuilt,
            recipe_texts=ledger.recipe_texts(),
        )

    @classmethod
    def read_intact(cls, study: Study, ledger: Ledger) -> StudySnapshot:
        """`read`, refused (LedgerError) when the chain is broken or a table disagrees with it:
        a report, bundle or export of an altered ledger would launder the alteration."""
        snap = cls.read(study, ledger)
        ledger.require_intact(snap.integrity_problems)
        return snap

    @cached_property
    def gates(self) -> tuple[GateSnapshot, ...]:
        """Every gate of the study, in study order."""
        out = []
        for gate in self.study.gates.values():
            decisions = tuple(d for d in self.decisions if d.gate == gate.gate_id)
            out.append(
                GateSnapshot(
                    study=self.study,
                    plan=self.plan,
                    runs=self.runs,
                    gate=gate,
                    freezes=tuple(f for f in self.freezes if f.gate == gate.gate_id),
                    decisions=decisions,
                    active=_active(decisions),
                    cells=_succeeded_cells(self.study, self.runs, gate),
                    files_only=self.rebuilt,
                )
            )
        return tuple(out)

    def events_of(self, kind: str) -> tuple[Event, ...]:
        """The events of `kind` and its sub-kinds (`run.retrying`, `run.retrying.x`), as
        `Ledger.events(kind)` selects them."""
        return tuple(e for e in self.events if e.kind == kind or e.kind.startswith(kind + "."))

    def gate(self, gate_id: str) -> GateSnapshot:
        for view in self.gates:
            if view.gate_id == gate_id:
                return view
        raise KeyError(gate_id)

    @cached_property
    def _budget(self) -> tuple[BudgetResult | None, str]:
        try:
            return budget_of(self.plan, self.runs), ""
        except StagewiseError as exc:
            return None, str(exc)

    @property
    def budget(self) -> BudgetResult | None:
        return self._budget[0]

    @property
    def budget_note(self) -> str:
        """Why `budget` is None ("" when it is not)."""
        return self._budget[1]
