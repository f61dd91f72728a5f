"""The ledger: one SQLite file per study (WAL mode), the only module that speaks SQL.

Every write is a short `BEGIN IMMEDIATE` transaction, so several worker processes can write at
once without losing or duplicating anything: SQLite serialises the writers and the busy timeout
makes them wait their turn. Each change also appends an event whose hash covers the previous
event's hash, so any later edit of the history breaks the chain (`verify_chain`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stagewise.errors import DecisionError, ImportRejected, LedgerError
from stagewise.ledger.records import (
    DecisionRecord,
    Event,
    FreezeRecord,
    RunKey,
    RunRecord,
)
from stagewise.ledger.schema import MIGRATIONS, SCHEMA_VERSION, SUMMARY_FIELDS

LEDGER_FILE = "ledger.sqlite"
GENESIS = "0" * 64
BUSY_TIMEOUT_MS = 120_000

_RUN_COLUMNS = (
    "stage, condition_id, seed, host, status, cause, attempts, source, owner, created_at, "
    "started_at, finished_at, " + ", ".join(SUMMARY_FIELDS) + ", summary_json, log_path, "
    "checkpoint_path, checkpoint_sha256, log_tail"
)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _event_hash(prev_hash: str, ts: str, kind: str, subject: str, payload: str) -> str:
    return sha256_text(canonical_json([prev_hash, ts, kind, subject, payload]))


class Ledger:
    """Open with `Ledger.open(study_dir)`; use as a context manager to close it."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: Path | str, *, create: bool = True) -> Ledger:
        path = Path(folder) / LEDGER_FILE
        if not path.exists() and not create:
            raise LedgerError(f"{path}: no ledger; is {folder} a study folder?")
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.row_factory = sqlite3.Row
            version = cls._version(conn)
            if version == 0:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path}: not a usable SQLite ledger ({exc})") from None
        ledger = cls(path, conn)
        ledger._migrate(version)
        return ledger

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: ledger schema v{version} is newer than this stagewise "
                f"(v{SCHEMA_VERSION}); upgrade with `pip install -U stagewise`"
            )
        if version == SCHEMA_VERSION:
            return
        if version > 0:
            # Keep the old file: an upgrade should never be the thing that loses a ledger.
            backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
            self._conn.execute("PRAGMA wal_checkpoint(FULL)")
            shutil.copy2(self.path, backup)
        with self._write() as conn:
            current = self._version(conn)  # another process may have migrated meanwhile
            for target in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[target]:
                    conn.execute(statement)
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            if current == 0:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('created_at', ?)",
                    (utc_now(),),
                )
            if current != SCHEMA_VERSION:
                self._append(
                    conn, "ledger.migrate", "ledger", {"from": current, "to": SCHEMA_VERSION}
                )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return self._version(self._conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise LedgerError(f"{self.path}: cannot start a write ({exc})") from None
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    # ------------------------------------------------------------------ events
    def _append(
        self, conn: sqlite3.Connection, kind: str, subject: str, payload: Mapping[str, Any]
    ) -> int:
        row = conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        ts = utc_now()
        body = canonical_json(dict(payload))
        digest = _event_hash(prev, ts, kind, subject, body)
        cur = conn.execute(
            "INSERT INTO events (ts, kind, subject, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            (ts, kind, subject, body, prev, digest),
        )
        return int(cur.lastrowid or 0)

    def log_event(self, kind: str, subject: str, payload: Mapping[str, Any]) -> int:
        """Append a free-standing event (e.g. an `--allow-unfrozen` override)."""
        with self._write() as conn:
            return self._append(conn, kind, subject, payload)

    def events(self, kind: str | None = None) -> list[Event]:
        sql = "SELECT * FROM events"
        args: tuple[Any, ...] = ()
        if kind:
            sql += " WHERE kind = ? OR kind LIKE ?"
            args = (kind, f"{kind}.%")
        rows = self._conn.execute(sql + " ORDER BY seq", args).fetchall()
        return [
            Event(
                r["seq"],
                r["ts"],
                r["kind"],
                r["subject"],
                json.loads(r["payload"]),
                r["prev_hash"],
                r["hash"],
            )
            for r in rows
        ]

    def verify_chain(self) -> list[str]:
        """Problems found in the event chain; an empty list means it is intact."""
        problems = []
        prev = GENESIS
        for r in self._conn.execute("SELECT * FROM events ORDER BY seq"):
            if r["prev_hash"] != prev:
                problems.append(f"event {r['seq']}: prev_hash does not match event before it")
            if (
                _event_hash(r["prev_hash"], r["ts"], r["kind"], r["subject"], r["payload"])
                != r["hash"]
            ):
                problems.append(f"event {r['seq']}: hash does not match its content")
            prev = r["hash"]
        return problems

    # ------------------------------------------------------------------ runs
    @staticmethod
    def _run(row: sqlite3.Row) -> RunRecord:
        key = RunKey(row["stage"], row["condition_id"], int(row["seed"]), row["host"])
        return RunRecord(key, *(row[c.strip()] for c in _RUN_COLUMNS.split(",")[4:]))

    def runs(self, stage: str | None = None, status: str | None = None) -> list[RunRecord]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE 1=1"
        args: list[Any] = []
        if stage is not None:
            sql += " AND stage = ?"
            args.append(stage)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        rows = self._conn.execute(sql + " ORDER BY stage, host, seed, condition_id", args)
        return [self._run(r) for r in rows]

    def run(self, key: RunKey) -> RunRecord | None:
        row = self._conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE stage=? AND condition_id=? AND seed=? AND host=?",
            (key.stage, key.condition_id, key.seed, key.host),
        ).fetchone()
        return self._run(row) if row else None

    def ensure_runs(self, keys: Iterable[RunKey]) -> int:
        """Create pending rows for planned runs that have none yet; returns how many were new."""
        keys = list(keys)
        with self._write() as conn:
            now = utc_now()
            created = []
            for key in keys:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO runs (stage, condition_id, seed, host, status, created_at) "
                    "VALUES (?,?,?,?, 'pending', ?)",
                    (key.stage, key.condition_id, key.seed, key.host, now),
                )
                if cur.rowcount:
                    created.append(str(key))
            if created:
                self._append(conn, "run.planned", keys[0].stage, {"runs": created})
        return len(created)

    def claim(self, key: RunKey, owner: str, *, retry_failed: bool = False) -> RunRecord | None:
        """Atomically move a run to `running` for `owner`; None if it is not claimable."""
        claimable = (
            ("pending", "interrupted", "failed") if retry_failed else ("pending", "interrupted")
        )
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE runs SET status='running', owner=?, started_at=?, finished_at=NULL, "
                f"cause=NULL, attempts=attempts+1 WHERE stage=? AND condition_id=? AND seed=? "
                f"AND host=? AND status IN ({','.join('?' * len(claimable))})",
                (owner, utc_now(), key.stage, key.condition_id, key.seed, key.host, *claimable),
            )
            if not cur.rowcount:
                return None
            self._append(conn, "run.started", str(key), {"owner": owner})
        return self.run(key)

    def finish(
        self,
        key: RunKey,
        status: str,
        *,
        cause: str | None = None,
        summary: Mapping[str, Any] | None = None,
        log_path: str | None = None,
        checkpoint_path: str | None = None,
        checkpoint_sha256: str | None = None,
        log_tail: str | None = None,
        source: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Record the end of a run (succeeded / failed / interrupted) with its numbers."""
        if status not in ("succeeded", "failed", "interrupted", "pending"):
            raise LedgerError(f"cannot finish a run with status {status!r}")
        summary = dict(summary or {})
        values = [summary.get(f) for f in SUMMARY_FIELDS]
        with self._write() as conn:
            where = "stage=? AND condition_id=? AND seed=? AND host=?"
            args: list[Any] = [key.stage, key.condition_id, key.seed, key.host]
            if owner is not None:
                # Only the owner may close its run: a run re-claimed after a crash is not
                # overwritten by a late report from the process that lost it.
                where += " AND owner=?"
                args.append(owner)
            sets = ", ".join(f"{f}=?" for f in SUMMARY_FIELDS)
            cur = conn.execute(
                f"UPDATE runs SET status=?, cause=?, finished_at=?, {sets}, summary_json=?, "
                f"log_path=COALESCE(?, log_path), checkpoint_path=?, checkpoint_sha256=?, "
                f"log_tail=?, source=COALESCE(?, source) WHERE {where}",
                (
                    status,
                    cause,
                    utc_now(),
                    *values,
                    canonical_json(summary) if summary else None,
                    log_path,
                    checkpoint_path,
                    checkpoint_sha256,
                    log_tail,
                    source,
                    *args,
                ),
            )
            if not cur.rowcount:
                return
            self._append(
                conn,
                f"run.{status}",
                str(key),
                {"cause": cause, "val_bpb": summary.get("val_bpb"), "source": source},
            )

    def running_owners(self) -> dict[RunKey, str]:
        rows = self._conn.execute(
            "SELECT stage, condition_id, seed, host, owner FROM runs WHERE status='running'"
        ).fetchall()
        return {RunKey(r[0], r[1], int(r[2]), r[3]): r[4] or "" for r in rows}

    def mark_interrupted(self, key: RunKey, owner: str, cause: str) -> bool:
        """A running run whose owner is gone goes back to be rerun from scratch."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET status='interrupted', cause=?, finished_at=? WHERE stage=? AND "
                "condition_id=? AND seed=? AND host=? AND status='running' AND owner IS ?",
                (cause, utc_now(), key.stage, key.condition_id, key.seed, key.host, owner or None),
            )
            if cur.rowcount:
                self._append(conn, "run.interrupted", str(key), {"cause": cause, "owner": owner})
            return bool(cur.rowcount)

    def record_imports(self, rows: list[dict[str, Any]], source: str) -> tuple[int, int]:
        """Write validated import rows in one transaction: (added, unchanged).

        A row whose key already holds the same result changes nothing; a row whose key holds a
        different finished result is a conflict and the whole import is rolled back.
        """
        added = 0
        unchanged = 0
        with self._write() as conn:
            for row in rows:
                key = RunKey(row["stage"], row["condition_id"], int(row["seed"]), row["host"])
                existing = self.run(key)
                if existing is not None and existing.status in ("succeeded", "failed"):
                    if _same_result(existing, row):
                        unchanged += 1
                        continue
                    if existing.status == "succeeded":
                        raise ImportRejected(
                            f"{source}: row {row['_line']}: {key} already has a different result "
                            f"(val_bpb {existing.val_bpb}); a recorded result is never overwritten"
                        )
                if existing is not None and existing.status == "running":
                    raise ImportRejected(
                        f"{source}: row {row['_line']}: {key} is running here right now"
                    )
                summary = {f: row.get(f) for f in SUMMARY_FIELDS if row.get(f) is not None}
                now = utc_now()
                conn.execute(
                    "INSERT OR IGNORE INTO runs (stage, condition_id, seed, host, status, created_at) "
                    "VALUES (?,?,?,?, 'pending', ?)",
                    (key.stage, key.condition_id, key.seed, key.host, now),
                )
                sets = ", ".join(f"{f}=?" for f in SUMMARY_FIELDS)
                conn.execute(
                    f"UPDATE runs SET status=?, cause=?, source=?, owner=NULL, started_at=NULL, "
                    f"finished_at=?, {sets}, summary_json=? WHERE stage=? AND condition_id=? AND "
                    "seed=? AND host=?",
                    (
                        row["status"],
                        row.get("cause"),
                        source,
                        now,
                        *(row.get(f) for f in SUMMARY_FIELDS),
                        canonical_json(row.get("summary") or summary)
                        if (row.get("summary") or summary)
                        else None,
                        key.stage,
                        key.condition_id,
                        key.seed,
                        key.host,
                    ),
                )
                added += 1
            if added:
                self._append(
                    conn,
                    "import",
                    source,
                    {"added": added, "unchanged": unchanged, "rows": len(rows)},
                )
        return added, unchanged

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
            seq = self._append(
                conn,
                f"gate.{kind}",
                gate,
                {
                    "sha256": sha256,
                    "post_hoc": post_hoc,
                    "reason": reason,
                    "results": len(results_at_freeze),
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
                "SELECT id, kind FROM decisions WHERE gate=? AND withdrawn_at IS NULL ORDER BY id",
                (gate,),
            ).fetchall()
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
            seq = self._append(
                conn,
                f"decision.{kind}",
                gate,
                {
                    "promoted": promoted,
                    "reason": reason,
                    "source": source,
                    "frozen_sha256": frozen_sha256,
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
                    canonical_json(dict(payload)),
                    utc_now(),
                    seq,
                ),
            )
            did = int(cur.lastrowid or 0)
        return next(d for d in self.decisions(gate) if d.id == did)

    def withdraw_decision(self, gate: str, reason: str) -> DecisionRecord:
        with self._write() as conn:
            row = conn.execute(
                "SELECT id FROM decisions WHERE gate=? AND withdrawn_at IS NULL ORDER BY id DESC LIMIT 1",
                (gate,),
            ).fetchone()
            if row is None:
                raise DecisionError(f"gate {gate} has no active decision to withdraw")
            conn.execute(
                "UPDATE decisions SET withdrawn_at=?, withdraw_reason=? WHERE id=?",
                (utc_now(), reason, row["id"]),
            )
            self._append(
                conn, "decision.withdrawn", gate, {"decision_id": row["id"], "reason": reason}
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


def _same_result(existing: RunRecord, row: Mapping[str, Any]) -> bool:
    if existing.status != row["status"]:
        return False
    if row["status"] != "succeeded":
        return True
    a, b = existing.val_bpb, row.get("val_bpb")
    return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12
