"""What the event chain commits to, and the check of the tables against it.

Since schema v3 every event that changes what a gate reads carries a digest of the data it
wrote: an import lists the digest of every row it recorded, a run's completion the digest of its
result, a freeze the digest of its record, a decision the digest of its record (and which earlier
decisions it superseded). The v3 migration event holds the same digests for everything recorded
before the upgrade, so an upgraded ledger is covered from that point on.

Identifiers (stage, condition, host, gate) enter a digest through their own sha256. They are
declared in study.toml and never scrubbed.

Digest format 2 (events carry `"digest_format": 2`) commits to every field a bundle shows: a
run's source, timestamps, attempts and checkpoint hash as well as its result; a free text
(cause, source, reason, payload, a frozen rule's canonical text) twice: as the bundle shows it
(`ledger.masking`: every path cut to `<path>/<file name>`, the same on every machine) and, inside
one `originals` digest per record, as written. A bundle proves what it shows without the
original leaving the machine, and a forger who edits a shown text, or the originals digest a
bundle publishes for a masked record, breaks the record's digest. Format 1 (events before)
committed the result only and the original texts; a bundle proves such rows only where nothing
in them was masked.

The functions here are pure (no SQL): the ledger and `stagewise verify` feed them their own rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from stagewise.ledger.masking import mask_paths, mask_value
from stagewise.ledger.records import DecisionRecord, FreezeRecord, RunRecord
from stagewise.ledger.schema import SUMMARY_FIELDS

IdHash = Callable[[str], str]

# Event kinds whose payload carries data digests (schema v3 on).
RUN_RESULT_KINDS = ("run.succeeded", "run.failed", "run.interrupted", "run.pending")
RUN_OPEN_KINDS = ("run.started",)
BASELINE_KIND = "ledger.migrate"
# How the row digests of an event were made (see the module doc); absent means 1.
DIGEST_FORMAT = 2
DIGEST_FORMAT_KEY = "digest_format"


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


def _floats(numbers: Sequence[Any]) -> list[Any]:
    # As floats: SQLite and JSON may give 3 or 3.0 for the same value.
    return [
        float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in numbers
    ]


def run_digest(
    key_sha256: str,
    status: str,
    cause_sha256: str,
    numbers: Sequence[Any],
    recipe_sha256: str | None = None,
) -> str:
    """Format 1: one run's result: its key (`key_digest`), state, cause and every summary
    number, and the sha256 of the recipe it trained when one is recorded (runs from before
    schema v4 keep their digest)."""
    parts: list[Any] = [key_sha256, status, cause_sha256, _floats(numbers)]
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
    """What the chain says the tables hold (from the v3 baseline on). `formats` holds the
    digest format of every commitment made in format 2 or later, keyed like its table."""

    baseline: int | None = None  # seq of the v3 migration event; None: no data commitments
    # key digest -> (result digest, or None while the run is open again; seq of the event)
    runs: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    freezes: dict[int, tuple[str, int]] = field(default_factory=dict)  # event_seq -> digest
    decisions: dict[int, tuple[str, int]] = field(default_factory=dict)
    withdrawn: dict[int, int] = field(default_factory=dict)  # decision event_seq -> seq
    problems: list[str] = field(default_factory=list)
    formats: dict[tuple[str, str | int], int] = field(default_factory=dict)

    def format_of(self, table: str, key: str | int) -> int:
        return self.formats.get((table, key), 1)


def _seq_list(value: Any) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list) else []


def commitments(events: Iterable[tuple[int, str, Mapping[str, Any]]]) -> Commitments:
    """Replay the events (seq, kind, payload) in order into what the tables must hold."""
    out = Commitments()
    for seq, kind, payload in events:
        try:
            fmt = int(payload.get(DIGEST_FORMAT_KEY, 1))
        except (TypeError, ValueError):
            fmt = 1
            out.problems.append(f"event {seq} ({kind}): its digest format is not a number")
        if kind == BASELINE_KIND and "runs" in payload:
            # A later migration starts from its own snapshot; the earlier one is history.
            out = Commitments(baseline=seq)
            for kd, rd in payload.get("runs", []):
                out.runs[str(kd)] = (str(rd), seq)
                out.formats["run", str(kd)] = fmt
            for es, fd in payload.get("freezes", []):
                out.freezes[int(es)] = (str(fd), seq)
                out.formats["freeze", int(es)] = fmt
            for es, dd, withdrawn in payload.get("decisions", []):
                out.decisions[int(es)] = (str(dd), seq)
                out.formats["decision", int(es)] = fmt
                if withdrawn:
                    out.withdrawn[int(es)] = seq
            continue
        if out.baseline is None:
            continue
        try:
            if kind == "import":
                for kd, rd in payload.get("results", []):
                    out.runs[str(kd)] = (str(rd), seq)
                    out.formats["run", str(kd)] = fmt
            elif kind in RUN_RESULT_KINDS and "result_sha256" in payload:
                out.runs[str(payload["key_sha256"])] = (str(payload["result_sha256"]), seq)
                out.formats["run", str(payload["key_sha256"])] = fmt
            elif kind in RUN_OPEN_KINDS and "key_sha256" in payload:
                out.runs[str(payload["key_sha256"])] = (None, seq)
            elif kind.startswith("gate.") and "record_sha256" in payload:
                out.freezes[seq] = (str(payload["record_sha256"]), seq)
                out.formats["freeze", seq] = fmt
            elif kind.startswith("decision.") and "record_sha256" in payload:
                out.decisions[seq] = (str(payload["record_sha256"]), seq)
                out.formats["decision", seq] = fmt
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
    digest: str  # digest format 1
    finished: bool = True  # runs: succeeded/failed; decisions: unused
    active: bool = True  # decisions only
    digest2: str = ""  # digest format 2 (every field, texts as shown and as written)

    def digest_in(self, fmt: int) -> str:
        return self.digest2 if fmt >= 2 else self.digest


class Hashes(Protocol):
    """How ids and free texts enter a row's digest (the ledger's own, or a bundle's).

    `text`/`json` hash a text as written; `shown_text`/`shown_json` as a bundle shows it
    (masked); `originals` gives a record's digest of its texts as written (`compute` makes it
    from `text`/`json`; a bundle that masked the record publishes it instead)."""

    def id(self, value: str) -> str: ...
    def text(self, value: str | None) -> str: ...
    def json(self, value: Any) -> str: ...
    def shown_text(self, value: str | None) -> str: ...
    def shown_json(self, value: Any) -> str: ...
    def originals(self, record: str, compute: Callable[[], str]) -> str: ...


class LedgerHashes:
    """Ids and texts as the ledger holds them: nothing scrubbed; the shown form is masked."""

    # Ids repeat in every row; hashing each once keeps the integrity check cheap.
    _id = staticmethod(lru_cache(maxsize=1 << 16)(sha256_text))

    def id(self, value: str) -> str:
        return self._id(value)

    def text(self, value: str | None) -> str:
        return text_hash(value)

    def json(self, value: Any) -> str:
        return text_hash(canonical_json(value))

    def shown_text(self, value: str | None) -> str:
        return text_hash(mask_paths(value or ""))

    def shown_json(self, value: Any) -> str:
        return text_hash(canonical_json(mask_value(value)))

    def originals(self, record: str, compute: Callable[[], str]) -> str:
        return compute()


def run_record_key(key_sha256: str) -> str:
    """How a bundle names a record in its published originals (ledger/commitments.json)."""
    return f"run:{key_sha256}"


def freeze_record_key(event_seq: int) -> str:
    return f"freeze:{event_seq}"


def decision_record_key(event_seq: int) -> str:
    return f"decision:{event_seq}"


def run_originals(rec: RunRecord, h: Hashes) -> str:
    return digest([h.text(rec.cause), h.text(rec.source)])


def freeze_originals(rec: FreezeRecord, h: Hashes) -> str:
    return digest([h.text(rec.reason), h.json(rec.results_at_freeze)])


def decision_originals(rec: DecisionRecord, h: Hashes) -> str:
    return digest([h.text(rec.reason), h.text(rec.source), h.json(rec.payload)])


def run_row(rec: RunRecord, h: Hashes, label: str) -> TableRow:
    """A run as the chain commits to it."""
    k = rec.key
    key = key_digest(k.stage, k.condition_id, k.seed, k.host, h.id)
    numbers = [getattr(rec, f) for f in SUMMARY_FIELDS]
    originals = h.originals(run_record_key(key), lambda: run_originals(rec, h))
    return TableRow(
        label=label,
        key=key,
        digest=run_digest(key, rec.status, h.text(rec.cause), numbers, rec.recipe_sha256),
        finished=rec.status in ("succeeded", "failed"),
        digest2=digest(
            [
                key,
                rec.status,
                h.shown_text(rec.cause),
                _floats(numbers),
                h.shown_text(rec.source),
                rec.created_at or "",
                rec.started_at,
                rec.finished_at,
                int(rec.attempts or 0),
                rec.checkpoint_sha256,
                rec.recipe_sha256,
                originals,
            ]
        ),
    )


def freeze_row(rec: FreezeRecord, h: Hashes, label: str) -> TableRow:
    originals = h.originals(freeze_record_key(rec.event_seq), lambda: freeze_originals(rec, h))
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
        digest2=digest(
            [
                h.id(rec.gate),
                rec.kind,
                rec.sha256,
                h.shown_text(rec.canonical),
                rec.frozen_at,
                bool(rec.post_hoc),
                h.shown_text(rec.reason),
                h.shown_json(rec.results_at_freeze),
                originals,
            ]
        ),
    )


def decision_row(rec: DecisionRecord, h: Hashes, label: str) -> TableRow:
    originals = h.originals(decision_record_key(rec.event_seq), lambda: decision_originals(rec, h))
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
        digest2=digest(
            [
                h.id(rec.gate),
                rec.kind,
                [h.id(c) for c in rec.promoted],
                h.shown_text(rec.reason),
                h.shown_text(rec.source),
                rec.frozen_sha256,
                rec.decided_at,
                h.shown_json(rec.payload),
                originals,
            ]
        ),
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
        # No baseline: the chain commits to no data, so no row can be proven (an erased chain
        # must not read as one that agrees with everything).
        held = [*runs, *freezes, *decisions]
        if held:
            problems.append(
                f"{held[0].label}: the chain holds no baseline (ledger.migrate) event, so none "
                f"of the {len(held)} records can be proven against it"
            )
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
        elif value != row.digest_in(chain.format_of("run", str(row.key))):
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
            if entry[0] != row.digest_in(chain.format_of(kind, int(row.key))):
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
