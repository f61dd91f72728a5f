"""What the event chain commits to, and the check of the tables against it.

Since schema v3 every event that changes what a gate reads carries a digest of the data it
wrote: an import lists the digest of every row it recorded, a run's completion the digest of its
result, a freeze the digest of its record, a decision the digest of its record (and which earlier
decisions it superseded). The v3 migration event holds the same digests for everything recorded
before the upgrade, so an upgraded ledger is covered from that point on.

Identifiers (stage, condition, host, gate) enter a digest through their own sha256, never as
text: an audit bundle that renames an id equal to the machine's host name can still prove its
rows against the chain by publishing the hash of the original id beside the new one. Free texts
that a bundle scrubs (causes, reasons, sources) enter the same way.

The functions here are pure (no SQL): the ledger and `stagewise verify` feed them their own rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from stagewise.ledger.records import DecisionRecord, FreezeRecord, RunRecord
from stagewise.ledger.schema import SUMMARY_FIELDS

IdHash = Callable[[str], str]

# Event kinds whose payload carries data digests (schema v3 on).
RUN_RESULT_KINDS = ("run.succeeded", "run.failed", "run.interrupted", "run.pending")
RUN_OPEN_KINDS = ("run.started",)
BASELINE_KIND = "ledger.migrate"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _dumps(value: Any) -> str:
    # Numbers as Python writes them (repr round-trips a float); non-finite values are data
    # here, not an error: the digest must describe whatever the table holds.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(value: Any) -> str:
    return sha256_text(_dumps(value))


def text_hash(text: str | None) -> str:
    return sha256_text(text or "")


def key_digest(stage: str, condition_id: str, seed: int, host: str, id_hash: IdHash) -> str:
    return digest([id_hash(stage), id_hash(condition_id), int(seed), id_hash(host)])


def run_digest(
    key_sha256: str,
    status: str,
    cause_sha256: str,
    numbers: Sequence[Any],
    recipe_sha256: str | None = None,
) -> str:
    """The digest of one run's result: its key (`key_digest`), state, cause and every summary
    number (as floats: SQLite and JSON may give 3 or 3.0 for the same value), and the sha256
    of the recipe it trained when one is recorded (runs from before schema v4 keep their
    digest)."""
    floats = [
        float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in numbers
    ]
    parts: list[Any] = [key_sha256, status, cause_sha256, floats]
    if recipe_sha256 is not None:
        parts.append(recipe_sha256)
    return digest(parts)


def freeze_digest(
    gate: str,
    kind: str,
    sha256: str,
    frozen_at: str,
    post_hoc: bool,
    reason_sha256: str,
    results_sha256: str,
    id_hash: IdHash,
) -> str:
    """A freeze record: the gate, the hash of its canonical text, when, post hoc or not, why."""
    return digest(
        [id_hash(gate), kind, sha256, frozen_at, bool(post_hoc), reason_sha256, results_sha256]
    )


def decision_digest(
    gate: str,
    kind: str,
    promoted: Sequence[str],
    reason_sha256: str,
    source_sha256: str,
    frozen_sha256: str | None,
    decided_at: str,
    payload_sha256: str,
    id_hash: IdHash,
) -> str:
    return digest(
        [
            id_hash(gate),
            kind,
            [id_hash(c) for c in promoted],
            reason_sha256,
            source_sha256,
            frozen_sha256,
            decided_at,
            payload_sha256,
        ]
    )


@dataclass
class Commitments:
    """What the chain says the tables hold (from the v3 baseline on)."""

    baseline: int | None = None  # seq of the v3 migration event; None: no data commitments
    # key digest -> (result digest, or None while the run is open again; seq of the event)
    runs: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    freezes: dict[int, tuple[str, int]] = field(default_factory=dict)  # event_seq -> digest
    decisions: dict[int, tuple[str, int]] = field(default_factory=dict)
    withdrawn: dict[int, int] = field(default_factory=dict)  # decision event_seq -> seq
    problems: list[str] = field(default_factory=list)


def _seq_list(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list) else []


def commitments(events: Iterable[tuple[int, str, Mapping[str, Any]]]) -> Commitments:
    """Replay the events (seq, kind, payload) in order into what the tables must hold."""
    out = Commitments()
    for seq, kind, payload in events:
        if kind == BASELINE_KIND and "runs" in payload:
            # A later migration starts from its own snapshot; the earlier one is history.
            out = Commitments(baseline=seq)
            for kd, rd in payload.get("runs", []):
                out.runs[str(kd)] = (str(rd), seq)
            for es, fd in payload.get("freezes", []):
                out.freezes[int(es)] = (str(fd), seq)
            for es, dd, withdrawn in payload.get("decisions", []):
                out.decisions[int(es)] = (str(dd), seq)
                if withdrawn:
                    out.withdrawn[int(es)] = seq
            continue
        if out.baseline is None:
            continue
        try:
            if kind == "import":
                for kd, rd in payload.get("results", []):
                    out.runs[str(kd)] = (str(rd), seq)
            elif kind in RUN_RESULT_KINDS and "result_sha256" in payload:
                out.runs[str(payload["key_sha256"])] = (str(payload["result_sha256"]), seq)
            elif kind in RUN_OPEN_KINDS and "key_sha256" in payload:
                out.runs[str(payload["key_sha256"])] = (None, seq)
            elif kind.startswith("gate.") and "record_sha256" in payload:
                out.freezes[seq] = (str(payload["record_sha256"]), seq)
            elif kind.startswith("decision.") and "record_sha256" in payload:
                out.decisions[seq] = (str(payload["record_sha256"]), seq)
                for old in _seq_list(payload.get("supersedes")):
                    out.withdrawn[old] = seq
            elif kind == "decision.withdrawn" and "decision_seq" in payload:
                out.withdrawn[int(payload["decision_seq"])] = seq
        except (KeyError, TypeError, ValueError):
            out.problems.append(f"event {seq} ({kind}): payload does not hold its commitments")
    return out


@dataclass(frozen=True)
class TableRow:
    """One row of the runs, freezes or decisions table, reduced to what the chain checks."""

    label: str  # how a message names it ("run s1/c_a/seed1/h", "freeze g12h #2")
    key: str | int  # key digest (runs) or event_seq (freezes, decisions)
    digest: str
    finished: bool = True  # runs: succeeded/failed; decisions: unused
    active: bool = True  # decisions only


class Hashes(Protocol):
    """How ids and free texts enter a row's digest (the ledger's own, or a bundle's)."""

    def id(self, value: str) -> str: ...
    def text(self, value: str | None) -> str: ...
    def json(self, value: Any) -> str: ...


class LedgerHashes:
    """Ids and texts as the ledger holds them: nothing renamed, nothing scrubbed."""

    # Ids repeat in every row; hashing each once keeps the integrity check cheap.
    _id = staticmethod(lru_cache(maxsize=1 << 16)(sha256_text))

    def id(self, value: str) -> str:
        return self._id(value)

    def text(self, value: str | None) -> str:
        return text_hash(value)

    def json(self, value: Any) -> str:
        return text_hash(canonical_json(value))


def run_row(rec: RunRecord, h: Hashes, label: str) -> TableRow:
    """A run as the chain commits to it."""
    k = rec.key
    key = key_digest(k.stage, k.condition_id, k.seed, k.host, h.id)
    numbers = [getattr(rec, f) for f in SUMMARY_FIELDS]
    return TableRow(
        label=label,
        key=key,
        digest=run_digest(key, rec.status, h.text(rec.cause), numbers, rec.recipe_sha256),
        finished=rec.status in ("succeeded", "failed"),
    )


def freeze_row(rec: FreezeRecord, h: Hashes, label: str) -> TableRow:
    return TableRow(
        label=label,
        key=rec.event_seq,
        digest=freeze_digest(
            rec.gate,
            rec.kind,
            rec.sha256,
            rec.frozen_at,
            rec.post_hoc,
            h.text(rec.reason),
            h.json(rec.results_at_freeze),
            h.id,
        ),
    )


def decision_row(rec: DecisionRecord, h: Hashes, label: str) -> TableRow:
    return TableRow(
        label=label,
        key=rec.event_seq,
        digest=decision_digest(
            rec.gate,
            rec.kind,
            rec.promoted,
            h.text(rec.reason),
            h.text(rec.source),
            rec.frozen_sha256,
            rec.decided_at,
            h.json(rec.payload),
            h.id,
        ),
        active=rec.active,
    )


def compare(
    chain: Commitments,
    runs: Iterable[TableRow],
    freezes: Iterable[TableRow],
    decisions: Iterable[TableRow],
) -> list[str]:
    """Every disagreement between the tables and the chain, in table order."""
    problems = list(chain.problems)
    if chain.baseline is None:
        return problems
    seen: set[str | int] = set()
    for row in runs:
        seen.add(row.key)
        committed = chain.runs.get(str(row.key))
        if committed is None:
            if row.finished:
                problems.append(f"{row.label}: a result no event of the chain recorded")
            continue
        value, seq = committed
        if value is None:
            if row.finished:
                problems.append(
                    f"{row.label}: a result the chain does not hold (event {seq} reopened it)"
                )
        elif value != row.digest:
            problems.append(f"{row.label}: differs from what event {seq} recorded")
    for kd, (value, seq) in chain.runs.items():
        if kd not in seen and value is not None:
            problems.append(f"a run recorded by event {seq} is missing from the runs table")
    for kind, rows, records in (
        ("freeze", freezes, chain.freezes),
        ("decision", decisions, chain.decisions),
    ):
        seen = set()
        for row in rows:
            seen.add(row.key)
            entry = records.get(int(row.key))
            if entry is None:
                problems.append(f"{row.label}: a {kind} no event of the chain recorded")
                continue
            if entry[0] != row.digest:
                problems.append(f"{row.label}: differs from what event {entry[1]} recorded")
            if kind == "decision":
                withdrawn_by = chain.withdrawn.get(int(row.key))
                if row.active and withdrawn_by is not None:
                    problems.append(f"{row.label}: active, but event {withdrawn_by} withdrew it")
                elif not row.active and withdrawn_by is None:
                    problems.append(
                        f"{row.label}: withdrawn, but no event of the chain withdrew it"
                    )
        for es, (_value, seq) in records.items():
            if es not in seen:
                problems.append(f"a {kind} recorded by event {seq} is missing from its table")
    return problems
