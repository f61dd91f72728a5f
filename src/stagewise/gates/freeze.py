"""Freezing a gate: its rules and the plan of its stages, written down before the stage runs.

The canonical form of a freeze is sorted-key JSON (`stagewise.ledger.canonical_json`) of

- `frozen`: what may not change afterwards: the gate's table as parsed from study.toml, the
  study's reference and metric, the conditions each rule targets (so editing roles in the matrix
  counts as an edit), and each pooled stage's budget, seeds, hosts and candidate specification;
- `frozen_sha256`: the sha256 of `frozen` alone, compared on every later use;
- `plan`: the candidates each pooled stage has now (null while its feeding gate is undecided);
- `previous_sha256` (the ledger's previous freeze of any gate) and `amends` (this gate's
  previous freeze), so freezes form a chain on top of the ledger's hash-chained event log;
- `kind` ("freeze" | "amend") and `reason`.

The record's sha256 is that of the whole canonical text. Results already present in the gate's
stages are stored with it and the freeze is flagged post hoc.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stagewise.errors import FrozenRuleMismatch
from stagewise.gates.results import FreezeSummary
from stagewise.ledger import FreezeRecord, Ledger, canonical_json, sha256_text
from stagewise.plan import build_plan
from stagewise.study.model import Gate, Study

FORMAT = "stagewise-freeze/1"


def _gate(study: Study, gate_id: str) -> Gate:
    if gate_id not in study.gates:
        raise FrozenRuleMismatch(
            f"unknown gate {gate_id!r} in {study.study_file}; gates: {', '.join(study.gates)}"
        )
    return study.gates[gate_id]


def frozen_definition(study: Study, gate_id: str) -> dict[str, Any]:
    """The part of a gate that may not change once frozen."""
    from stagewise.gates.evaluate import rule_targets

    gate = _gate(study, gate_id)
    stages_raw = study.raw.get("stages", {})
    return {
        "gate": gate_id,
        "definition": gate.raw,
        "reference": study.reference,
        "metric": study.metric,
        "targets": [
            sorted(rule_targets(rule, study, study.condition_ids)) if rule.targeted else "all"
            for rule in gate.rules
        ],
        "stages": [
            {
                "stage": sid,
                "budget_seconds": study.stages[sid].budget_seconds,
                # Only token/step budgets add a key, so existing freezes keep their sha256.
                **(
                    {"budget": str(study.stages[sid].budget)}
                    if study.stages[sid].budget_spec
                    else {}
                ),
                "seeds": list(study.stages[sid].seeds),
                "hosts": list(study.stages[sid].hosts),
                "candidates": stages_raw.get(sid, {}).get("candidates", "all"),
            }
            for sid in gate.stages
        ],
    }


Candidates = Mapping[str, tuple[str, ...] | None]


def _stage_plan(study: Study, candidates: Candidates, gate_id: str) -> dict[str, list[str] | None]:
    """The candidates each pooled stage has now (the `plan` part of a freeze record)."""
    return {
        sid: (None if candidates[sid] is None else list(candidates[sid] or ()))
        for sid in _gate(study, gate_id).stages
    }


def _results(study: Study, ledger: Ledger, gate_id: str) -> list[dict[str, Any]]:
    rows = []
    for sid in _gate(study, gate_id).stages:
        for run in ledger.runs(stage=sid):
            if run.status == "succeeded":
                rows.append(
                    {
                        "stage": run.stage,
                        "condition_id": run.condition_id,
                        "seed": run.seed,
                        "host": run.host,
                        "val_bpb": run.val_bpb,
                    }
                )
    return rows


def parse(record: FreezeRecord) -> dict[str, Any]:
    value = json.loads(record.canonical)
    return value if isinstance(value, dict) else {}


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub} added")
            elif key not in new:
                out.append(f"{sub} removed")
            else:
                out += _diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _diff(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


@dataclass(frozen=True)
class FreezeOutcome:
    record: FreezeRecord
    created: bool  # False: the gate was already frozen as it stands (nothing recorded)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.record.gate,
            "kind": self.record.kind,
            "sha256": self.record.sha256,
            "frozen_sha256": parse(self.record).get("frozen_sha256"),
            "frozen_at": self.record.frozen_at,
            "post_hoc": self.record.post_hoc,
            "reason": self.record.reason,
            "results_at_freeze": len(self.record.results_at_freeze),
            "created": self.created,
        }


def changes_since_freeze(study: Study, ledger: Ledger, gate_id: str) -> list[str]:
    """What differs between the gate as it stands and its last freeze (empty: unchanged)."""
    return changes_against(
        study, gate_id, ledger.current_freeze(gate_id), build_plan(study, ledger).candidates
    )


def changes_against(
    study: Study, gate_id: str, record: FreezeRecord | None, candidates: Candidates
) -> list[str]:
    """What differs between the gate as it stands, with the plan's `candidates`, and its freeze
    `record` (the gate's current one); ["never frozen"] without one."""
    if record is None:
        return ["never frozen"]
    stored = parse(record)
    current = frozen_definition(study, gate_id)
    changes = []
    if sha256_text(canonical_json(current)) != stored.get("frozen_sha256"):
        changes = _diff(stored.get("frozen", {}), current) or ["the frozen definition differs"]
    known = stored.get("plan", {})
    now = _stage_plan(study, candidates, gate_id)
    for sid, cands in known.items():
        if (
            cands is not None
            and now.get(sid) is not None
            and sorted(cands) != sorted(now[sid] or [])
        ):
            changes.append(f"candidates of {sid}: {cands} -> {now[sid]}")
    return changes


def freeze(
    study: Study,
    ledger: Ledger,
    gate_id: str,
    reason: str | None = None,
    amend: bool = False,
) -> FreezeOutcome:
    """Freeze a gate (or amend its freeze). Refreezing an unchanged gate records nothing."""
    _gate(study, gate_id)
    current = ledger.current_freeze(gate_id)
    where = f"`stagewise freeze {study.root} {gate_id} --amend --reason ...`"
    if amend:
        if current is None:
            raise FrozenRuleMismatch(
                f"gate {gate_id} was never frozen, so there is nothing to amend; "
                f"freeze it with `stagewise freeze {study.root} {gate_id}`"
            )
        if not (reason or "").strip():
            raise FrozenRuleMismatch(f"an amendment of gate {gate_id} needs a reason: {where}")
    elif current is not None:
        changes = changes_since_freeze(study, ledger, gate_id)
        if not changes:
            return FreezeOutcome(current, created=False)
        raise FrozenRuleMismatch(
            f"gate {gate_id} was frozen at {current.frozen_at} (sha256 {current.sha256[:12]}) and "
            f"has changed since ({'; '.join(changes)}); record the change as an amendment: {where}"
        )
    definition = frozen_definition(study, gate_id)
    previous = ledger.freezes()
    results = _results(study, ledger, gate_id)
    clean_reason = reason.strip() if reason else None
    content: dict[str, Any] = {
        "format": FORMAT,
        "gate": gate_id,
        "kind": "amend" if amend else "freeze",
        "reason": clean_reason,
        "frozen": definition,
        "frozen_sha256": sha256_text(canonical_json(definition)),
        "plan": _stage_plan(study, build_plan(study, ledger).candidates, gate_id),
        "previous_sha256": previous[-1].sha256 if previous else None,
        "amends": current.sha256 if current is not None else None,
    }
    text = canonical_json(content)
    record = ledger.record_freeze(
        gate_id,
        "amend" if amend else "freeze",
        sha256_text(text),
        text,
        post_hoc=bool(results),
        reason=clean_reason,
        results_at_freeze=results,
    )
    return FreezeOutcome(record, created=True)


def require_frozen(study: Study, ledger: Ledger, gate_id: str) -> FreezeRecord:
    """The gate's last freeze, provided the gate still reads exactly as frozen."""
    _gate(study, gate_id)
    record = ledger.current_freeze(gate_id)
    return frozen_as_written(
        study, gate_id, record, build_plan(study, ledger).candidates if record else {}
    )


def frozen_as_written(
    study: Study, gate_id: str, record: FreezeRecord | None, candidates: Candidates
) -> FreezeRecord:
    """`record` (the gate's current freeze), provided the gate still reads exactly as frozen
    with the plan's `candidates`; FrozenRuleMismatch saying what to do otherwise."""
    _gate(study, gate_id)
    if record is None:
        raise FrozenRuleMismatch(
            f"gate {gate_id} is not frozen; freeze it before its stage runs: "
            f"`stagewise freeze {study.root} {gate_id}`"
        )
    changes = changes_against(study, gate_id, record, candidates)
    if changes:
        raise FrozenRuleMismatch(
            f"gate {gate_id} in {study.study_file} no longer matches its freeze of "
            f"{record.frozen_at} (sha256 {record.sha256[:12]}): {'; '.join(changes)}; "
            f"record the change as an amendment with "
            f"`stagewise freeze {study.root} {gate_id} --amend --reason ...`"
        )
    return record


def summary(record: FreezeRecord) -> FreezeSummary:
    """A freeze record as a gate's result and history show it."""
    sha = parse(record).get("frozen_sha256")
    return FreezeSummary.of(record, sha if isinstance(sha, str) else None)


def amendment_history(ledger: Ledger, gate_id: str) -> tuple[FreezeSummary, ...]:
    """Every freeze and amendment of the gate, oldest first."""
    return tuple(summary(r) for r in ledger.freezes(gate_id))
