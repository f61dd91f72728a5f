"""The records an audit bundle carries (runs, frozen records, decisions), read back as the
ledger's record types, and reduced to the rows the event chain committed to.

Texts a bundle shows masked (paths cut) enter the digests as shown; the digest of the texts as
written comes from the `originals` the bundle publishes in ledger/commitments.json, which the
chain binds to the shown texts (digest format 2): editing either breaks the record's digest.
Nothing else in commitments.json is trusted: a `renamed` id map or a `texts` hash map (written
by earlier releases) is refused, since the chain never committed to them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stagewise.audit.layout import (
    COMMITMENTS_JSON,
    DECISIONS_JSON,
    FROZEN_DIR,
    RUNS_JSON,
    frozen_file,
)
from stagewise.ledger import DecisionRecord, FreezeRecord, RunKey, RunRecord
from stagewise.ledger import integrity as chain
from stagewise.ledger.integrity import TableRow, canonical_json
from stagewise.ledger.masking import withheld_hash


class BundleHashes(chain.LedgerHashes):
    """Hashes of ids and texts as the bundle shows them; the originals as it publishes them."""

    def __init__(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict):
            raise ValueError(f"{COMMITMENTS_JSON}: not a JSON object")
        self.refused = [
            name for name in ("renamed", "texts") if data.get(name) not in (None, {}, [])
        ]
        published = data.get("originals") or {}
        if not isinstance(published, dict):
            raise ValueError(f"{COMMITMENTS_JSON}: 'originals' is not an object")
        self.published = {str(k): str(v) for k, v in published.items()}

    def shown_text(self, value: str | None) -> str:
        return withheld_hash(value) or chain.text_hash(value)

    def shown_json(self, value: Any) -> str:
        return withheld_hash(value) or chain.text_hash(canonical_json(value))

    def originals(self, record: str, compute: Callable[[], str]) -> str:
        return self.published.get(record) or compute()


def load_runs(bundle: Path) -> list[RunRecord]:
    data = json.loads((bundle / RUNS_JSON).read_text(encoding="utf-8", errors="replace"))
    fields = RunRecord.__dataclass_fields__
    runs = []
    for row in data["runs"]:
        values = {k: row.get(k) for k in fields if k != "key"}
        values["attempts"] = values.get("attempts") or 0
        values["created_at"] = values.get("created_at") or ""
        # The raw summary stays in the ledger; its timing (report.run_tables.TIMING_COLUMNS)
        # travels as columns and comes back as the summary the run checks read.
        timing = {k: row.get(k) for k in ("startup_seconds", "eval_seconds") if k in row}
        values["summary_json"] = json.dumps(timing) if timing else None
        key = RunKey(row["stage"], row["condition_id"], int(row["seed"]), row["host"])
        runs.append(RunRecord(key=key, **values))
    return runs


def load_freezes(bundle: Path) -> list[FreezeRecord]:
    records = []
    for path in sorted((bundle / FROZEN_DIR).glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        for rec in data["records"]:
            records.append((int(rec["event_seq"]), str(data["gate"]), rec))
    out = []
    for i, (seq, gate, rec) in enumerate(sorted(records, key=lambda r: r[0]), start=1):
        out.append(
            FreezeRecord(
                i,
                gate,
                str(rec["kind"]),
                str(rec["sha256"]),
                str(rec["canonical"]),
                str(rec["frozen_at"]),
                bool(rec["post_hoc"]),
                rec.get("reason"),
                list(rec.get("results_at_freeze") or []),
                seq,
            )
        )
    return out


def load_decisions(bundle: Path) -> list[DecisionRecord]:
    data = json.loads((bundle / DECISIONS_JSON).read_text(encoding="utf-8", errors="replace"))
    out = []
    for d in data["decisions"]:
        out.append(
            DecisionRecord(
                int(d["id"]),
                str(d["gate"]),
                str(d["kind"]),
                tuple(d["promoted"]),
                d.get("reason"),
                d.get("source"),
                d.get("frozen_sha256"),
                dict(d.get("payload") or {}),
                str(d["decided_at"]),
                d.get("withdrawn_at"),
                d.get("withdraw_reason"),
                int(d["event_seq"]),
            )
        )
        if bool(d.get("active")) != (d.get("withdrawn_at") is None):
            raise ValueError(f"decision {d['id']}: 'active' contradicts 'withdrawn_at'")
    return sorted(out, key=lambda d: d.id)


def run_rows(runs: list[RunRecord], h: BundleHashes) -> Iterator[TableRow]:
    for r in runs:
        yield chain.run_row(r, h, f"{RUNS_JSON}: run {r.key}")


def freeze_rows(freezes: list[FreezeRecord], h: BundleHashes) -> Iterator[TableRow]:
    for f in freezes:
        label = f"{frozen_file(f.gate)}: {f.kind} record (event {f.event_seq})"
        yield chain.freeze_row(f, h, label)


def decision_rows(decisions: list[DecisionRecord], h: BundleHashes) -> Iterator[TableRow]:
    for d in decisions:
        label = f"{DECISIONS_JSON}: decision {d.id} of {d.gate} (event {d.event_seq})"
        yield chain.decision_row(d, h, label)
