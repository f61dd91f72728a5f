"""The ledger's common base: the connection, its write transactions and the event chain.

Every write is a short `BEGIN IMMEDIATE` transaction, so several worker processes can write at
once without losing or duplicating anything: SQLite serialises the writers and the busy timeout
makes them wait their turn. Each change also appends an event whose hash covers the previous
event's hash, so any later edit of the history breaks the chain (`verify_chain`).

`runs_table.RunsTable` and `gate_records.GateRecords` build on `LedgerCore`; `store.Ledger`
joins them and opens, migrates and closes the file.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stagewise.errors import LedgerError
from stagewise.ledger import integrity
from stagewise.ledger.integrity import TableRow, canonical_json, sha256_text
from stagewise.ledger.masking import mask_paths, mask_value
from stagewise.ledger.records import DecisionRecord, Event, FreezeRecord, RunKey, RunRecord

BACKUP_SUFFIX = ".bak"
GENESIS = "0" * 64
# The chain head kept outside the database, beside it: deleting events (or the whole events
# table) leaves a database that is consistent with itself, but not with this file.
HEAD_FILE = "ledger.head"
# Event hash formats: 1 hashes the payload text whole; 2 (schema v3 on) hashes each payload
# field on its own, so a bundle can scrub one field (a path) and still prove the chain; 3 hashes
# each field (and the subject) as written *and* masked (`ledger.masking`), so a bundle proves the
# masked text it shows, not only that some text was there.
EVENT_FORMAT = 3


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _event_hash(prev_hash: str, ts: str, kind: str, subject: str, payload: str) -> str:
    return sha256_text(canonical_json([prev_hash, ts, kind, subject, payload]))


def field_hashes(payload: Mapping[str, Any]) -> dict[str, str]:
    return {k: sha256_text(canonical_json(v)) for k, v in payload.items()}


def event_hash_v2(
    prev_hash: str, ts: str, kind: str, subject_sha256: str, fields: Mapping[str, str]
) -> str:
    """Format 2: the hash covers the sha256 of the subject and of each payload field."""
    return sha256_text(canonical_json([prev_hash, ts, kind, subject_sha256, dict(fields)]))


def shown_pair(shown_sha256: str, original_sha256: str) -> str:
    """Format 3: one field, as a bundle shows it (masked) and as written."""
    return sha256_text(shown_sha256 + original_sha256)


def field_pairs(payload: Mapping[str, Any]) -> dict[str, str]:
    return {
        k: shown_pair(sha256_text(canonical_json(mask_value(v))), sha256_text(canonical_json(v)))
        for k, v in payload.items()
    }


def subject_pair(subject: str) -> str:
    return shown_pair(sha256_text(mask_paths(subject)), sha256_text(subject))


def event_hash(
    fmt: int, prev_hash: str, ts: str, kind: str, subject: str, payload_text: str
) -> str:
    if fmt >= 3:
        pairs = field_pairs(json.loads(payload_text))
        return event_hash_v2(prev_hash, ts, kind, subject_pair(subject), pairs)
    if fmt >= 2:
        fields = field_hashes(json.loads(payload_text))
        return event_hash_v2(prev_hash, ts, kind, sha256_text(subject), fields)
    return _event_hash(prev_hash, ts, kind, subject, payload_text)


# The rows and keys as the chain commits to them (ids and texts as the ledger holds them).
_HASHES = integrity.LedgerHashes()


def run_row(rec: RunRecord) -> TableRow:
    """A run as the chain commits to it."""
    return integrity.run_row(rec, _HASHES, f"run {rec.key}")


def freeze_row(rec: FreezeRecord) -> TableRow:
    return integrity.freeze_row(
        rec, _HASHES, f"freeze {rec.gate} #{rec.id} (event {rec.event_seq})"
    )


def decision_row(rec: DecisionRecord) -> TableRow:
    return integrity.decision_row(
        rec, _HASHES, f"decision {rec.gate} #{rec.id} (event {rec.event_seq})"
    )


def key_sha(key: RunKey) -> str:
    return integrity.key_digest(key.stage, key.condition_id, key.seed, key.host, _HASHES.id)


def head_file(ledger_path: Path) -> Path:
    return ledger_path.with_name(HEAD_FILE)


def read_head_file(ledger_path: Path) -> tuple[int, str] | None:
    """(seq, hash) of the last event this study's ledger is known to have held; None when no
    head was ever written (a ledger from before the head file, or a new study)."""
    path = head_file(ledger_path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["seq"]), str(data["hash"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable: treat as a head nothing can match, so the ledger is checked, not trusted.
        return (-1, "unreadable")


def write_head_file(ledger_path: Path, seq: int, digest: str) -> None:
    """Atomically record the chain head beside the ledger (never moving it backwards: another
    process may have written a later head meanwhile)."""
    known = read_head_file(ledger_path)
    if known is not None and known[0] > seq:
        return
    path = head_file(ledger_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(canonical_json({"seq": seq, "hash": digest}) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        # The event itself is committed; the head file only guards against later deletion.
        tmp.unlink(missing_ok=True)


def last_event(conn: sqlite3.Connection) -> tuple[int, str] | None:
    row = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else None


def read_only_message(folder: Path) -> str:
    return f"{folder}: the study folder is read-only; nothing was recorded"


class LedgerCore:
    """The connection and what every part of the ledger needs: writes, backups, events."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        self.path = path
        self._conn = conn
        self.read_only = read_only
        # True for a scratch ledger rebuilt from a bundle's records (`Ledger.rebuild`): its study
        # files are the bundle's, but the data and the trainer on this machine are not the
        # study's, so only what the study files say of a recipe can be compared with a freeze.
        self.rebuilt = False
        self._appended: tuple[int, str] | None = None  # last event of the open write

    # ------------------------------------------------------------------ writing
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        if self.read_only:
            raise LedgerError(read_only_message(self.path.parent))
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_error(exc, "cannot start a write") from None
        self._appended = None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            self._appended = None
            # SQLite may already have rolled back (a full disk does): a second ROLLBACK would
            # then fail and hide the real cause behind "cannot rollback".
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._write_error(exc, "write failed") from None
            raise
        if self._appended is not None:
            write_head_file(self.path, *self._appended)
            self._appended = None
            # The backup follows every recorded change, so a lost ledger loses nothing.
            self._backup()

    def _write_error(self, exc: sqlite3.Error, what: str) -> LedgerError:
        text = str(exc)
        if "full" in text:
            return LedgerError(
                f"{self.path}: disk full ({text}); nothing was recorded; free space and rerun"
            )
        if "readonly" in text or "read-only" in text:
            return LedgerError(read_only_message(self.path.parent))
        return LedgerError(f"{self.path}: {what}; nothing was recorded ({text})")

    def _backup(self) -> None:
        """Refresh `ledger.sqlite.bak` after each recorded change, so a lost ledger can be
        restored rather than recreated. A backup is replaced only by a ledger whose chain
        extends the backup's: a ledger that lost events never overwrites a good backup."""
        target = self.path.with_name(self.path.name + BACKUP_SUFFIX)
        if not self._extends(target):
            return
        tmp = target.with_name(f"{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            dst = sqlite3.connect(tmp)
            try:
                self._conn.backup(dst)
                # The copy of a WAL ledger is a WAL database, and every reader of it (the next
                # backup's check above) would leave -wal and -shm files beside it. In rollback
                # mode the backup is one self-contained file, restored by copying it back.
                dst.execute("PRAGMA journal_mode = DELETE")
            finally:
                dst.close()
            # What an older backup left beside it belongs to that file, never to this one.
            for stale in ("-wal", "-shm"):
                target.with_name(target.name + stale).unlink(missing_ok=True)
            os.replace(tmp, target)
        except (OSError, sqlite3.Error):
            # The record itself is committed; a missing backup must not undo or hide that.
            tmp.unlink(missing_ok=True)

    def _extends(self, backup: Path) -> bool:
        """Whether this ledger's chain holds the backup's last event (or there is no backup)."""
        if not backup.is_file():
            return True
        try:
            old = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
            try:
                theirs = last_event(old)
            finally:
                old.close()
        except sqlite3.Error:
            return True  # not a usable backup: nothing of value to keep
        if theirs is None:
            return True
        row = self._conn.execute("SELECT hash FROM events WHERE seq = ?", (theirs[0],)).fetchone()
        return row is not None and str(row[0]) == theirs[1]

    # ------------------------------------------------------------------ events
    def _append(
        self, conn: sqlite3.Connection, kind: str, subject: str, payload: Mapping[str, Any]
    ) -> int:
        row = conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        ts = utc_now()
        body = canonical_json(dict(payload))
        digest = event_hash(EVENT_FORMAT, prev, ts, kind, subject, body)
        cur = conn.execute(
            "INSERT INTO events (ts, kind, subject, payload, prev_hash, hash, format) "
            "VALUES (?,?,?,?,?,?,?)",
            (ts, kind, subject, body, prev, digest, EVENT_FORMAT),
        )
        seq = int(cur.lastrowid or 0)
        self._appended = (seq, digest)
        return seq

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
                int(r["format"]),
            )
            for r in rows
        ]

    @property
    def head(self) -> str:
        """The chain head: the hash of the last event (publish it to pin the whole history)."""
        row = self._conn.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return str(row[0]) if row else GENESIS

    def verify_chain(self) -> list[str]:
        """Problems found in the event chain; an empty list means it is intact."""
        problems = []
        prev = GENESIS
        for r in self._conn.execute("SELECT * FROM events ORDER BY seq"):
            where = f"event {r['seq']} ({r['kind']})"
            if r["prev_hash"] != prev:
                problems.append(f"{where}: prev_hash does not match the event before it")
            try:
                ok = (
                    event_hash(
                        int(r["format"]),
                        r["prev_hash"],
                        r["ts"],
                        r["kind"],
                        r["subject"],
                        r["payload"],
                    )
                    == r["hash"]
                )
            except (ValueError, TypeError, AttributeError):
                ok = False
            if not ok:
                problems.append(f"{where}: hash does not match its content")
            prev = r["hash"]
        return problems
