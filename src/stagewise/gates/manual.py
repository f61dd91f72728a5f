"""Decisions taken outside the tool: a researcher's judgement or a published outcome.

They feed the next stages exactly like computed decisions and are flagged `manual` wherever they
are shown. A later computed decision for the same gate is refused until the manual one is
withdrawn; both stay in the event log.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path

from stagewise.bounds import parse_problem, read_input_text
from stagewise.errors import DecisionError
from stagewise.ledger import DecisionRecord, Ledger
from stagewise.plan import build_plan
from stagewise.study.model import Study


def decide_manually(
    study: Study,
    ledger: Ledger,
    gate_id: str,
    promote: Sequence[str],
    *,
    reason: str,
    source: str | None = None,
) -> DecisionRecord:
    if gate_id not in study.gates:
        raise DecisionError(f"unknown gate {gate_id!r}; gates: {', '.join(study.gates)}")
    if not reason.strip():
        raise DecisionError("a decision taken outside the tool needs --reason")
    ids = [p.strip() for p in promote if p.strip()]
    labels = {c.label: c.condition_id for c in study.conditions}
    resolved = []
    for item in ids:
        if item in study.condition_ids:
            resolved.append(item)
        elif item in labels:
            resolved.append(labels[item])
        else:
            raise DecisionError(
                f"--promote: unknown condition {item!r} (use condition ids or labels)"
            )
    if len(set(resolved)) != len(resolved):
        raise DecisionError(f"--promote: a condition is listed twice in {ids}")
    gate = study.gates[gate_id]
    frozen = ledger.current_freeze(gate_id)
    if not resolved and gate.kind == "confirm" and frozen is not None:
        # An empty decision would silently overrule the frozen confirmation with "nothing".
        raise DecisionError(
            f"--promote names no condition, but gate {gate_id} is a confirm gate frozen at "
            f"{frozen.frozen_at} (sha256 {frozen.sha256[:12]}); name the conditions it confirms"
        )
    candidates = build_plan(study, ledger).gate_candidates(gate)
    if candidates is None:
        feeders = sorted({g for s in gate.stages if (g := study.stages[s].candidates.gate)})
        raise DecisionError(
            f"gate {gate_id}: its candidates are not known yet; decide {', '.join(feeders)} first"
        )
    outside = [c for c in resolved if c not in candidates]
    if outside:
        raise DecisionError(
            f"--promote: {', '.join(outside)} is not a candidate of gate {gate_id} "
            f"(candidates: {', '.join(candidates)})"
        )
    payload = {"gate": gate_id, "kind": gate.kind, "stages": list(gate.stages), "manual": True}
    return ledger.record_decision(
        gate_id,
        "manual",
        resolved,
        reason=reason.strip(),
        source=source,
        frozen_sha256=None,
        payload=payload,
    )


def withdraw(ledger: Ledger, study: Study, gate_id: str, reason: str) -> DecisionRecord:
    if gate_id not in study.gates:
        raise DecisionError(f"unknown gate {gate_id!r}; gates: {', '.join(study.gates)}")
    if not reason.strip():
        raise DecisionError("withdrawing a decision needs --reason")
    return ledger.withdraw_decision(gate_id, reason.strip())


def apply_outside_decisions(study: Study, ledger: Ledger, path: Path) -> list[DecisionRecord]:
    """Record the decisions of a study's `outside_decisions.toml` (paper06's published gates)."""
    try:
        data = tomllib.loads(read_input_text(path, DecisionError))
    except (RecursionError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise DecisionError(f"{path}: invalid TOML: {parse_problem(exc) or exc}") from None
    source = data.get("source")
    return [
        decide_manually(
            study,
            ledger,
            entry["gate"],
            entry["promote"],
            reason=entry["reason"],
            source=entry.get("source", source),
        )
        for entry in data.get("decision", [])
    ]
