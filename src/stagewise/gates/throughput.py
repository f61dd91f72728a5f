"""Will a stage's budget train enough steps? An estimate from this study's measured throughput.

`freeze` warns (never blocks) when a stage that a gate pools is expected to train fewer optimizer
steps than `[runner] min_steps`: once frozen, a budget that is too short gives `too_short` runs
that are ranked all the same. The seconds per step of a condition come from its own finished
runs (training seconds over timed steps); a condition not run yet takes the study's median
tokens per second at its total batch size. Before any run of the study finished, the seconds
per step that `stagewise doctor` measured (gates/doctor_rate.py: the study's doctor.json, else
the user cache's) stand in, scaled by tokens per step relative to the config doctor trained: a
rough estimate (another model size or device trains at another rate), and the warning says so.
With neither, no warning.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from stagewise.analysis.run_checks import RunLike, summary_of
from stagewise.gates.doctor_rate import DoctorRate, read_rate
from stagewise.json_types import JsonObject
from stagewise.ledger import Ledger
from stagewise.plan import build_plan
from stagewise.study.model import Study


@dataclass(frozen=True)
class ShortBudget:
    stage: str
    condition_id: str
    budget_seconds: float
    expected_steps: int
    min_steps: int
    source: str  # "this condition's runs" | "the study's median tokens/s" | doctor's measurement

    def text(self) -> str:
        return (
            f"stage {self.stage}: {self.condition_id} is expected to train about "
            f"{self.expected_steps} optimizer steps in {self.budget_seconds:g}s (from "
            f"{self.source}), fewer than min_steps = {self.min_steps}; its runs would be "
            "flagged too_short: raise the budget or lower total_batch_size"
        )

    def to_json(self) -> JsonObject:
        return {
            "stage": self.stage,
            "condition_id": self.condition_id,
            "budget_seconds": self.budget_seconds,
            "expected_steps": self.expected_steps,
            "min_steps": self.min_steps,
            "source": self.source,
        }


def _batch_tokens(study: Study, condition_id: str) -> float | None:
    value = study.condition(condition_id).params.get(
        "total_batch_size", study.runner.get("total_batch_size")
    )
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def seconds_per_step(runs: Iterable[RunLike]) -> dict[str, float]:
    """Per condition: training seconds per timed optimizer step over its succeeded runs."""
    seconds: dict[str, float] = {}
    steps: dict[str, int] = {}
    for r in runs:
        if r.status != "succeeded" or not r.training_seconds or not r.num_steps:
            continue
        untimed = summary_of(r).get("untimed_steps")
        timed = r.num_steps - (untimed if isinstance(untimed, int) else 0)
        if timed <= 0:
            continue
        seconds[r.condition_id] = seconds.get(r.condition_id, 0.0) + float(r.training_seconds)
        steps[r.condition_id] = steps.get(r.condition_id, 0) + timed
    return {c: seconds[c] / steps[c] for c in seconds}


def short_budgets(study: Study, ledger: Ledger, gate_id: str) -> list[ShortBudget]:
    """The (stage, condition) pairs of the gate's stages expected to train too few steps."""
    minimum = study.min_steps
    if minimum <= 0 or gate_id not in study.gates:
        return []
    per_step = seconds_per_step(ledger.runs(status="succeeded"))
    tokens_per_s = [
        tokens / per_step[cid]
        for cid in per_step
        if cid in study.condition_ids and (tokens := _batch_tokens(study, cid)) is not None
    ]
    study_rate = statistics.median(tokens_per_s) if tokens_per_s else None
    doctor = _doctor_source(study) if not per_step else None
    plan = build_plan(study, ledger)
    out: list[ShortBudget] = []
    for stage_id in study.gates[gate_id].stages:
        budget = study.stages[stage_id].budget_seconds
        if budget <= 0:
            continue  # a token or step budget: the steps are known, not estimated
        candidates = plan.stage(stage_id).candidates or study.condition_ids
        for cid in candidates:
            if cid in per_step:
                steps, source = budget / per_step[cid], "this condition's runs"
            elif study_rate is not None and (tokens := _batch_tokens(study, cid)) is not None:
                steps, source = budget * study_rate / tokens, "the study's median tokens/s"
            elif doctor is not None and (tokens := _batch_tokens(study, cid)) is not None:
                rate, source = doctor
                steps = budget / (rate.seconds_per_step * tokens / rate.total_batch_size)
            else:
                continue
            if steps < minimum:
                out.append(ShortBudget(stage_id, cid, budget, int(steps), minimum, source))
    return out


def _doctor_source(study: Study) -> tuple[DoctorRate, str] | None:
    """Doctor's measurement and the words that name it, when the study has no measured run."""
    found = read_rate(study.root)
    if found is None:
        return None
    rate, path = found
    model = (
        f", depth {rate.depth}/aspect {rate.aspect_ratio}"
        if rate.depth is not None and rate.aspect_ratio is not None
        else ""
    )
    return rate, (
        f"doctor's measurement in {path} on {rate.device}{model} at {rate.measured_at}: "
        f"{rate.seconds_per_step:.3g}s per step of {rate.total_batch_size} tokens, scaled by "
        "tokens per step; rough, the study has no measured run yet"
    )


__all__ = ["ShortBudget", "seconds_per_step", "short_budgets"]
