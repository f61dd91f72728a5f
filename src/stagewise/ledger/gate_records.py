"""Gate records: the freezes of a gate's rules and the decisions taken at it."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from stagewise.errors import DecisionError
from stagewise.ledger import integrity
from stagewise.ledger.core import LedgerCore, decision_row, freeze_row, utc_now
from stagewise.ledger.integrity import canonical_json
from stagewise.ledger.records import DecisionRecord, FreezeRecord


class GateRecords(LedgerCore):
    """The gate part of `Ledger`: rule freezes and the decisions taken at each gate."""

    # ------------------------------------------------------------------ freezes
    def record_freeze(
        self,
        gate: str,
        kind: str,
        sha256: str,
        canonical: str,
        *,
        post_hoc: bool,
        reason: str | None,
        results_at_freeze: list[dict[str, Any]],
    ) -> FreezeRecord:
        with self._write() as conn:
            now = utc_now()
            # The digest of the row as it will read back (results through their JSON text).
            record = freeze_row(
                FreezeRecord(
                    0,
                    gate,
                    kind,
                    sha256,
                    canonical,
                    now,
                    post_hoc,
                    reason,
                    json.loads(canonical_json(results_at_freeze)),
                    0,
                )
            ).digest2
            seq = self._append(
                conn,
                f"gate.{kind}",
                gate,
                {
                    "sha256": sha256,
                    "post_hoc": post_hoc,
                    "reason": reason,
                    "results": len(results_at_freeze),
                    "record_sha256": record,
                    integrity.DIGEST_FORMAT_KEY: integrity.DIGEST_FORMAT,
                },
            )
            cur = conn.execute(
                "INSERT INTO freezes (gate, kind, sha256, canonical, frozen_at, post_hoc, reason, "
                "results_at_freeze, event_seq) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    gate,
                    kind,
                    sha256,
                    canonical,
                    now,
                    int(post_hoc),
                    reason,
                    canonical_json(results_at_freeze),
                    seq,
                ),
            )
            fid = int(cur.lastrowid or 0)
        return next(f for f in self.freezes(gate) if f.id == fid)

    def freezes(self, gate: str | None = None) -> list[FreezeRecord]:
        sql = "SELECT * FROM freezes"
        args: tuple[Any, ...] = ()
        if gate is not None:
            sql += " WHERE gate = ?"
            args = (gate,)
        return [
            FreezeRecord(
                r["id"],
                r["gate"],
                r["kind"],
                r["sha256"],
                r["canonical"],
                r["frozen_at"],
                bool(r["post_hoc"]),
                r["reason"],
                json.loads(r["results_at_freeze"]),
                r["event_seq"],
            )
            for r in self._conn.execute(sql + " ORDER BY id", args)
        ]

    def current_freeze(self, gate: str) -> FreezeRecord | None:
        records = self.freezes(gate)
        return records[-1] if records else None

    @staticmethod
    def _insert_freezes(conn: sqlite3.Connection, freezes: Iterable[FreezeRecord]) -> None:
        """Rows as given, inside the caller's transaction (`Ledger.rebuild`)."""
        for f in freezes:
            conn.execute(
                "INSERT INTO freezes (id, gate, kind, sha256, canonical, frozen_at, post_hoc, "
                "reason, results_at_freeze, event_seq) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    f.id,
                    f.gate,
                    f.kind,
                    f.sha256,
                    f.canonical,
                    f.frozen_at,
                    int(f.post_hoc),
                    f.reason,
                    canonical_json(f.results_at_freeze),
                    f.event_seq,
                ),
            )

    # ------------------------------------------------------------------ decisions
    def record_decision(
        self,
        gate: str,
        kind: str,
        promoted: Iterable[str],
        *,
        reason: str | None,
        source: str | None,
        frozen_sha256: str | None,
        payload: Mapping[str, Any],
        replace_computed: bool = True,
    ) -> DecisionRecord:
        """Record a gate decision. A manual decision blocks a computed one until withdrawn."""
        promoted = list(promoted)
        with self._write() as conn:
            active = conn.execute(
                "SELECT id, kind, event_seq FROM decisions WHERE gate=? AND withdrawn_at IS NULL "
                "ORDER BY id",
                (gate,),
            ).fetchall()
            superseded: list[int] = []
            for row in active:
                if row["kind"] == "manual":
                    raise DecisionError(
                        f"gate {gate} already has a manual decision (taken outside the tool); "
                        f"withdraw it first with `stagewise decide DIR {gate} --withdraw --reason ...`"
                    )
                if kind == "manual" or replace_computed:
                    # A recomputation supersedes the earlier computed decision; both stay logged.
                    conn.execute(
                        "UPDATE decisions SET withdrawn_at=?, withdraw_reason=? WHERE id=?",
                        (utc_now(), f"superseded by a new {kind} decision", row["id"]),
                    )
                    superseded.append(int(row["event_seq"]))
            decided_at = utc_now()
            body = canonical_json(dict(payload))
            record = decision_row(
                DecisionRecord(
                    0,
                    gate,
                    kind,
                    tuple(promoted),
                    reason,
                    source,
                    frozen_sha256,
                    json.loads(body),
                    decided_at,
                    None,
                    None,
                    0,
                )
            ).digest2
            seq = self._append(
                conn,
                f"decision.{kind}",
                gate,
                {
                    "promoted": promoted,
                    "reason": reason,
                    "source": source,
                    "frozen_sha256": frozen_sha256,
                    "supersedes": superseded,
                    "record_sha256": record,
                    integrity.DIGEST_FORMAT_KEY: integrity.DIGEST_FORMAT,
                },
            )
            cur = conn.execute(
                "INSERT INTO decisions (gate, kind, promoted, reason, source, frozen_sha256, payload, "
                "decided_at, event_seq) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    gate,
                    kind,
                    canonical_json(promoted),
                    reason,
                    source,
                    frozen_sha256,
                    body,
                    decided_at,
                    seq,
                ),
            )
            did = int(cur.lastrowid or 0)
        return next(d for d in self.decisions(gate) if d.id == did)

    def withdraw_decision(self, gate: str, reason: str) -> DecisionRecord:
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, event_seq FROM decisions WHERE gate=? AND withdrawn_at IS NULL "
                "ORDER BY id DESC LIMIT 1",
                (gate,),
            ).fetchone()
            if row is None:
                raise DecisionError(f"gate {gate} has no active decision to withdraw")
            conn.execute(
                "UPDATE decisions SET withdrawn_at=?, withdraw_reason=? WHERE id=?",
                (utc_now(), reason, row["id"]),
            )
            self._append(
                conn,
                "decision.withdrawn",
                gate,
                {"decision_id": row["id"], "reason": reason, "decision_seq": row["event_seq"]},
            )
        return next(d for d in self.decisions(gate) if d.id == row["id"])

    def decisions(self, gate: str | None = None) -> list[DecisionRecord]:
        sql = "SELECT * FROM decisions"
        args: tuple[Any, ...] = ()
        if gate is not None:
            sql += " WHERE gate = ?"
            args = (gate,)
        return [
            DecisionRecord(
                r["id"],
                r["gate"],
                r["kind"],
                tuple(json.loads(r["promoted"])),
                r["reason"],
                r["source"],
                r["frozen_sha256"],
                json.loads(r["payload"]),
                r["decided_at"],
                r["withdrawn_at"],
                r["withdraw_reason"],
                r["event_seq"],
            )
            for r in self._conn.execute(sql + " ORDER BY id", args)
        ]

    def active_decision(self, gate: str) -> DecisionRecord | None:
        active = [d for d in self.decisions(gate) if d.active]
        return active[-1] if active else None

    @staticmethod
    def _insert_decisions(conn: sqlite3.Connection, decisions: Iterable[DecisionRecord]) -> None:
        """Rows as given, inside the caller's transaction (`Ledger.rebuild`)."""
        for d in decisions:
            conn.execute(
                "INSERT INTO decisions (id, gate, kind, promoted, reason, source, "
                "frozen_sha256, payload, decided_at, withdrawn_at, withdraw_reason, "
                "event_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    d.id,
                    d.gate,
                    d.kind,
                    canonical_json(list(d.promoted)),
                    d.reason,
                    d.source,
                    d.frozen_sha256,
                    canonical_json(d.payload),
                    d.decided_at,
                    d.withdrawn_at,
                    d.withdraw_reason,
                    d.event_seq,
                ),
            )
