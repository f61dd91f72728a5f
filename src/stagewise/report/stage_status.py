"""One status per stage, read by every section of the report that speaks of results.

A stage holds recorded cells (all of them, or some with the rest pending), or is known only from
a published summary whose cells are not in this study, or has nothing yet. The outcome, the gate
sections, "What is pending" and the summary table all say it from here, so no two of them can
disagree (a replay of a publication holds the pooled summaries of stages it has no cells of).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stagewise.analysis.published import covered_stages
from stagewise.report.context import ReportContext

CELLS, PUBLISHED_ONLY, NOTHING = "cells", "published summary only", "nothing"


@dataclass(frozen=True)
class StageStatus:
    stage: str
    state: str  # CELLS | PUBLISHED_ONLY | NOTHING
    planned: int | None  # planned runs; None while its candidates wait for a gate
    succeeded: int
    failed: int
    pending: int
    published: tuple[str, ...]  # names of the published summaries that cover it

    @property
    def complete(self) -> bool:
        return self.state == CELLS and self.pending == 0 and self.failed == 0

    def words(self) -> str:
        if self.state == PUBLISHED_ONLY:
            return (
                f"{self.stage}: published summary only ({', '.join(self.published)}); "
                "its cells are not recorded in this study"
            )
        if self.state == CELLS:
            if self.planned is None:
                return f"{self.stage}: cells, {self.succeeded} runs recorded"
            return f"{self.stage}: cells, {self.succeeded}/{self.planned} runs recorded"
        if self.planned is None:
            return f"{self.stage}: nothing yet (candidates wait for a gate)"
        return f"{self.stage}: nothing yet (0/{self.planned} runs)"


def stage_statuses(ctx: ReportContext) -> list[StageStatus]:
    """Every stage of the study, in study order."""
    covered = covered_stages(ctx.study, ctx.published)
    out = []
    for st in ctx.stage_runs:
        name = st.stage
        if st.recorded:
            state = CELLS
        elif name in covered:
            state = PUBLISHED_ONLY
        else:
            state = NOTHING
        out.append(
            StageStatus(
                name,
                state,
                st.planned_runs,
                st.count("succeeded"),
                st.count("failed"),
                st.count("pending"),
                tuple(covered.get(name, ())),
            )
        )
    return out


def by_stage(ctx: ReportContext) -> dict[str, StageStatus]:
    return {s.stage: s for s in stage_statuses(ctx)}


def _list(stages: Sequence[str]) -> str:
    return ", ".join(stages)


def results_sentence(statuses: Sequence[StageStatus]) -> str:
    """One sentence on where every stage's results stand (the outcome and "What is pending")."""
    parts = []
    cells = [s for s in statuses if s.state == CELLS]
    published = [s for s in statuses if s.state == PUBLISHED_ONLY]
    nothing = [s for s in statuses if s.state == NOTHING]
    if cells:
        runs = sum(s.succeeded for s in cells)
        parts.append(f"{_list([s.stage for s in cells])} have their cells ({runs} runs recorded)")
    if published:
        parts.append(
            f"{_list([s.stage for s in published])} are known from published summaries only "
            "(their cells are not recorded in this study)"
        )
    if nothing:
        parts.append(f"{_list([s.stage for s in nothing])} have no results yet")
    return "Results: " + "; ".join(parts) + "." if parts else "This study has no stages."


def gate_results_words(ctx: ReportContext, stages: Sequence[str]) -> str | None:
    """What a gate's stages hold, when not all of them hold cells (None when they all do)."""
    status = by_stage(ctx)
    shown = [status[s] for s in stages if s in status]
    if all(s.state == CELLS for s in shown):
        return None
    return "; ".join(s.words() for s in shown)
