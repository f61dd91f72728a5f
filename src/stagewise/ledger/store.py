"""The ledger: one SQLite file per study (WAL mode), the only module that speaks SQL.

Every write is a short `BEGIN IMMEDIATE` transaction, so several worker processes can write at
once without losing or duplicating anything: SQLite serialises the writers and the busy timeout
makes them wait their turn. Each change also appends an event whose hash covers the previous
event's hash, so any later edit of the history breaks the chain (`verify_chain`).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stagewise.errors import DecisionError, ImportRejected, LedgerError
from stagewise.ledger import integrity
from stagewise.ledger.integrity import TableRow, canonical_json, sha256_text, text_hash
from stagewise.ledger.records import (
    DecisionRecord,
    Event,
    FreezeRecord,
    RunKey,
    RunRecord,
)
from stagewise.ledger.schema import MIGRATIONS, SCHEMA_VERSION, SUMMARY_FIELDS

LEDGER_FILE = "ledger.sqlite"
BACKUP_SUFFIX = ".bak"
GENESIS = "0" * 64
BUSY_TIMEOUT_MS = 120_000
# Event hash formats: 1 hashes the payload text whole; 2 (schema v3 on) hashes each payload
# field on its own, so a bundle can scrub one field (a path) and still prove the chain.
EVENT_FORMAT = 2

_RUN_COLUMNS = (
    "stage, condition_id, seed, host, status, cause, attempts, source, owner, created_at, "
    "started_at, finished_at, " + ", ".join(SUMMARY_FIELDS) + ", summary_json, log_path, "
    "checkpoint_path, checkpoint_sha256, log_tail"
)
# The RunRecord fields after its key, in column order (split once: runs() reads every row).
_RUN_FIELDS = tuple(c.strip() for c in _RUN_COLUMNS.split(",")[4:])


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


def event_hash(
    fmt: int, prev_hash: str, ts: str, kind: str, subject: str, payload_text: str
) -> str:
    if fmt >= 2:
        fields = field_hashes(json.loads(payload_text))
        return event_hash_v2(prev_hash, ts, kind, sha256_text(subject), fields)
    return _event_hash(prev_hash, ts, kind, subject, payload_text)


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


def backups(path: Path) -> list[Path]:
    """The ledger's backups (rolling and pre-migration), newest first."""
    found = [p for p in path.parent.glob(f"{path.name}*{BACKUP_SUFFIX}") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _evidence(folder: Path) -> list[str]:
    """What in a study folder shows that work was recorded (a ledger must exist then)."""
    found = []
    for name in ("decisions", "runs"):
        sub = folder / name
        if sub.is_dir() and any(sub.iterdir()):
            found.append(f"{name}/")
    return found


def _writable(folder: Path, path: Path) -> bool:
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def read_only_message(folder: Path) -> str:
    return f"{folder}: the study folder is read-only; nothing was recorded"


class Ledger:
    """Open with `Ledger.open(study_dir)`; use as a context manager to close it."""

    def __init__(self, path: Path, conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        self.path = path
        self._conn = conn
        self.read_only = read_only

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: Path | str, *, create: bool = True) -> Ledger:
        """Open the study's ledger. A missing one is created only with `create` (`init` does)
        and never where the folder shows recorded work: then the ledger was lost, and a fresh
        one would silently drop every decision; the error names the backup to restore."""
        folder = Path(folder)
        path = folder / LEDGER_FILE
        empty = path.is_file() and path.stat().st_size == 0
        if not path.exists() or empty:
            state = "empty" if empty else "missing"
            found = backups(path)
            evidence = _evidence(folder) + [p.name for p in found]
            if found:
                raise LedgerError(
                    f"{path}: the ledger is {state} but the study folder holds "
                    f"{', '.join(evidence)}; restore the newest backup with `cp {found[0]} "
                    f"{path}` (only `stagewise init` creates a ledger)"
                )
            if evidence or empty or not create:
                what = f"holds {', '.join(evidence)} but " if evidence else ""
                raise LedgerError(
                    f"{path}: the study folder {what}has no usable ledger ({state}) and no "
                    f"backup of it; only `stagewise init` creates a ledger, in a new folder"
                )
        if path.exists() and not _writable(folder, path):
            return cls._open_read_only(folder, path)
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.row_factory = sqlite3.Row
            version = cls._version(conn, path)
            if version == 0:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise LedgerError(f"{path}: not a usable SQLite ledger ({exc})") from None
        ledger = cls(path, conn)
        ledger._migrate(version)
        return ledger

    @classmethod
    def rebuild(
        cls,
        folder: Path | str,
        runs: Iterable[RunRecord],
        freezes: Iterable[FreezeRecord],
        decisions: Iterable[DecisionRecord],
    ) -> Ledger:
        """A scratch ledger holding exactly these records (no events): what `stagewise verify`
        re-derives a bundle's tables from, through the same code that made them."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        ledger = cls.open(folder, create=True)
        with ledger._write() as conn:
            for r in runs:
                k = r.key
                conn.execute(
                    f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES "
                    f"({','.join('?' * len(_RUN_COLUMNS.split(',')))})",
                    (
                        k.stage,
                        k.condition_id,
                        k.seed,
                        k.host,
                        *(getattr(r, c) for c in _RUN_FIELDS),
                    ),
                )
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
        return ledger

    @classmethod
    def _open_read_only(cls, folder: Path, path: Path) -> Ledger:
        """Reading a study needs no write: open the file read-only (immutable when SQLite
        cannot even create its shared-memory file beside a WAL ledger)."""
        last: Exception | None = None
        for flags in ("mode=ro", "mode=ro&immutable=1"):
            try:
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?{flags}",
                    uri=True,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    isolation_level=None,
                )
                conn.row_factory = sqlite3.Row
                version = cls._version(conn, path)
            except sqlite3.DatabaseError as exc:
                last = exc
                continue
            if version != SCHEMA_VERSION:
                conn.close()
                raise LedgerError(
                    f"{path}: ledger schema v{version} needs an upgrade to v{SCHEMA_VERSION}, "
                    f"but {read_only_message(folder).split(': ', 1)[1]}; copy the study "
                    "folder somewhere writable"
                )
            return cls(path, conn, read_only=True)
        raise LedgerError(f"{path}: not a usable SQLite ledger ({last})")

    @staticmethod
    def _version(conn: sqlite3.Connection, path: Path | None = None) -> int:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
        ).fetchone()
        if not has_meta:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            return 0
        try:
            version = int(str(row[0]).strip())
        except ValueError:
            version = -1
        if version < 1:
            raise LedgerError(
                f"{path or 'ledger'}: meta.schema_version is {row[0]!r}; expected a schema "
                f"version from 1 to {SCHEMA_VERSION}; restore the ledger from a backup "
                f"({LEDGER_FILE}*{BACKUP_SUFFIX} beside it)"
            )
        return version

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
            backup = self.path.with_name(f"{self.path.name}.v{version}{BACKUP_SUFFIX}")
            try:
                self._conn.execute("PRAGMA wal_checkpoint(FULL)")
                shutil.copy2(self.path, backup)
            except (OSError, sqlite3.Error) as exc:
                raise LedgerError(
                    f"{self.path}: cannot back the ledger up before upgrading it to "
                    f"v{SCHEMA_VERSION} ({exc}); nothing was changed"
                ) from None
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
                # The v3 baseline: everything recorded so far, committed to the chain.
                payload = {"from": current, "to": SCHEMA_VERSION, **self._snapshot()}
                self._append(conn, "ledger.migrate", "ledger", payload)

    def _snapshot(self) -> dict[str, Any]:
        return {
            "runs": [[r.key, r.digest] for r in map(run_row, self.runs())],
            "freezes": [[r.key, r.digest] for r in map(freeze_row, self.freezes())],
            "decisions": [
                [r.key, r.digest, not r.active] for r in map(decision_row, self.decisions())
            ],
        }

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
        if self.read_only:
            raise LedgerError(read_only_message(self.path.parent))
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._write_error(exc, "cannot start a write") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite may already have rolled back (a full disk does): a second ROLLBACK would
            # then fail and hide the real cause behind "cannot rollback".
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self._write_error(exc, "write failed") from None
            raise

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
        """Refresh `ledger.sqlite.bak` after a record that cannot be redone (a freeze, a
        decision, an import), so a lost ledger can be restored rather than recreated."""
        target = self.path.with_name(self.path.name + BACKUP_SUFFIX)
        tmp = target.with_name(target.name + ".tmp")
        try:
            dst = sqlite3.connect(tmp)
            try:
                self._conn.backup(dst)
            finally:
                dst.close()
            os.replace(tmp, target)
        except (OSError, sqlite3.Error):
            # The record itself is committed; a missing backup must not undo or hide that.
            tmp.unlink(missing_ok=True)

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

    def integrity_problems(self) -> list[str]:
        """The chain's own links first, then every table row that disagrees with the chain."""
        problems = self.verify_chain()
        chain = integrity.commitments(
            (int(r[0]), str(r[1]), json.loads(r[2]))
            for r in self._conn.execute("SELECT seq, kind, payload FROM events ORDER BY seq")
        )
        freezes = self.freezes()
        for f in freezes:
            if sha256_text(f.canonical) != f.sha256:
                problems.append(
                    f"freeze {f.gate} #{f.id} (event {f.event_seq}): its canonical text does "
                    "not hash to its sha256"
                )
        problems += integrity.compare(
            chain,
            map(run_row, self.runs()),
            map(freeze_row, freezes),
            map(decision_row, self.decisions()),
        )
        return problems

    def require_intact(self) -> str:
        """Refuse to read a study whose chain is broken or whose tables disagree with it;
        return the chain head otherwise."""
        problems = self.integrity_problems()
        if problems:
            more = f" (and {len(problems) - 1} more; `stagewise status` lists them)"
            raise LedgerError(
                f"{self.path}: integrity check failed at {problems[0]}"
                + (more if len(problems) > 1 else "")
                + "; restore the ledger from a backup or a bundle you trust"
            )
        return self.head

    # ------------------------------------------------------------------ runs
    @staticmethod
    def _run(row: sqlite3.Row) -> RunRecord:
        key = RunKey(row["stage"], row["condition_id"], int(row["seed"]), row["host"])
        return RunRecord(key, *(row[c] for c in _RUN_FIELDS))

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
            self._append(
                conn, "run.started", str(key), {"owner": owner, "key_sha256": _key_sha(key)}
            )
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
                {
                    "cause": cause,
                    "val_bpb": summary.get("val_bpb"),
                    "source": source,
                    **self._result_commitment(key),
                },
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
                self._append(
                    conn,
                    "run.interrupted",
                    str(key),
                    {"cause": cause, "owner": owner, **self._result_commitment(key)},
                )
            return bool(cur.rowcount)

    def _result_commitment(self, key: RunKey) -> dict[str, str]:
        """The digest of a run as written (read back, so SQLite's own typing is what counts)."""
        rec = self.run(key)
        if rec is None:
            raise LedgerError(f"run {key} vanished while it was being recorded")
        row = run_row(rec)
        return {"key_sha256": str(row.key), "result_sha256": row.digest}

    def record_imports(self, rows: list[dict[str, Any]], source: str) -> tuple[int, int]:
        """Write validated import rows in one transaction: (added, unchanged).

        A row whose key already holds the same result changes nothing; a row whose key holds a
        different finished result is a conflict and the whole import is rolled back.
        """
        added = 0
        unchanged = 0
        results: list[list[str]] = []
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
                commitment = self._result_commitment(key)
                results.append([commitment["key_sha256"], commitment["result_sha256"]])
                added += 1
            if added:
                self._append(
                    conn,
                    "import",
                    source,
                    {
                        "added": added,
                        "unchanged": unchanged,
                        "rows": len(rows),
                        "results": results,
                        "rows_sha256": integrity.digest(results),
                    },
                )
        if added:
            self._backup()
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
            record = integrity.freeze_digest(
                gate,
                kind,
                sha256,
                now,
                post_hoc,
                text_hash(reason),
                text_hash(canonical_json(results_at_freeze)),
                sha256_text,
            )
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
        self._backup()
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
            record = integrity.decision_digest(
                gate,
                kind,
                promoted,
                text_hash(reason),
                text_hash(source),
                frozen_sha256,
                decided_at,
                text_hash(body),
                sha256_text,
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
                    "supersedes": superseded,
                    "record_sha256": record,
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
        self._backup()
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
        self._backup()
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


def _key_sha(key: RunKey) -> str:
    return integrity.key_digest(key.stage, key.condition_id, key.seed, key.host, _HASHES.id)


def _same_result(existing: RunRecord, row: Mapping[str, Any]) -> bool:
    if existing.status != row["status"]:
        return False
    if row["status"] != "succeeded":
        return True
    a, b = existing.val_bpb, row.get("val_bpb")
    return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12
