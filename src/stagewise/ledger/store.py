"""The ledger: one SQLite file per study (WAL mode); `ledger/` is the only package that speaks SQL.

`Ledger` is one class assembled from parts over a shared connection: `core.LedgerCore` (write
transactions, backups, the hash-chained event log), `runs_table.RunsTable` (the runs) and
`gate_records.GateRecords` (freezes and decisions) and `jobs_table.JobsTable` (the cluster
jobs carrying runs). This module opens, creates, migrates and
closes the file, and checks every table against the chain (where the parts meet).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from stagewise.errors import LedgerError
from stagewise.ledger import integrity
from stagewise.ledger.core import (
    BACKUP_SUFFIX,
    EVENT_FORMAT,
    GENESIS,
    HEAD_FILE,
    decision_row,
    event_hash,
    event_hash_v2,
    field_hashes,
    freeze_row,
    head_file,
    last_event,
    read_head_file,
    read_only_message,
    run_row,
    utc_now,
    write_head_file,
)
from stagewise.ledger.core import _event_hash as _event_hash  # v1 hashes, for old-ledger tests
from stagewise.ledger.gate_records import GateRecords
from stagewise.ledger.integrity import TableRow, canonical_json, sha256_text, text_hash
from stagewise.ledger.jobs_table import JobsTable
from stagewise.ledger.records import DecisionRecord, Event, FreezeRecord, RunKey, RunRecord
from stagewise.ledger.runs_table import RunsTable
from stagewise.ledger.schema import MIGRATIONS, SCHEMA_VERSION

# What other modules import from here (the helpers themselves live in core.py).
__all__ = [
    "BACKUP_SUFFIX",
    "BUSY_TIMEOUT_MS",
    "EVENT_FORMAT",
    "GENESIS",
    "LEDGER_FILE",
    "DecisionRecord",
    "Event",
    "FreezeRecord",
    "Ledger",
    "RunKey",
    "RunRecord",
    "TableRow",
    "backups",
    "canonical_json",
    "decision_row",
    "event_hash",
    "event_hash_v2",
    "field_hashes",
    "freeze_row",
    "read_only_message",
    "run_row",
    "sha256_text",
    "text_hash",
    "utc_now",
]

LEDGER_FILE = "ledger.sqlite"
BUSY_TIMEOUT_MS = 120_000


def backups(path: Path) -> list[Path]:
    """The ledger's backups (rolling and pre-migration), newest first."""
    found = [p for p in path.parent.glob(f"{path.name}*{BACKUP_SUFFIX}") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _evidence(folder: Path) -> list[str]:
    """What in a study folder shows that work was recorded (a ledger must exist then)."""
    found = [HEAD_FILE] if (folder / HEAD_FILE).is_file() else []
    for name in ("decisions", "runs"):
        sub = folder / name
        if sub.is_dir() and any(sub.iterdir()):
            found.append(f"{name}/")
    return found


def _writable(folder: Path, path: Path) -> bool:
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


class Ledger(RunsTable, GateRecords, JobsTable):
    """Open with `Ledger.open(study_dir)`; use as a context manager to close it."""

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, folder: Path | str, *, create: bool = True, new_ledger: str | None = None
    ) -> Ledger:
        """Open the study's ledger. A missing one is created only with `create` (`init` does)
        and never where the folder shows recorded work (a head file, decisions, runs, a
        backup): then the ledger was lost, and a fresh one would silently drop every decision;
        the error names the backup to restore. `new_ledger` (a reason) starts a new ledger in
        such a folder on purpose: the old file is kept aside and the new chain records why."""
        folder = Path(folder)
        path = folder / LEDGER_FILE
        if path.is_symlink() or any(
            p.is_symlink() for p in (path.with_name(path.name + s) for s in ("-wal", "-shm"))
        ):
            # The ledger is the study's own file: a link would make every write land elsewhere.
            raise LedgerError(
                f"{path}: is a symbolic link (to {os.path.realpath(path)}); the ledger must be a "
                "file inside the study folder; nothing was read or written"
            )
        if new_ledger is not None:
            return cls._start_over(folder, path, new_ledger)
        empty = path.is_file() and path.stat().st_size == 0
        if not path.exists() or empty:
            state = "empty" if empty else "missing"
            found = backups(path)
            evidence = _evidence(folder) + [p.name for p in found]
            if found:
                raise LedgerError(
                    f"{path}: the ledger is {state} but the study folder holds "
                    f"{', '.join(evidence)}; restore the newest backup with `cp {found[0]} "
                    f"{path}` (only `stagewise init` creates a ledger: `stagewise init {folder} "
                    "--new-ledger REASON` starts a new one on purpose)"
                )
            if evidence or empty or not create:
                what = f"holds {', '.join(evidence)} but " if evidence else ""
                raise LedgerError(
                    f"{path}: the study folder {what}has no usable ledger ({state}) and no "
                    "backup of it; only `stagewise init` creates a ledger (`stagewise init "
                    f"{folder} --new-ledger REASON` in a study that lost its own)"
                )
        if path.exists() and not _writable(folder, path):
            return cls._open_read_only(folder, path)
        return cls._connect(folder, path)

    @classmethod
    def _connect(cls, folder: Path, path: Path) -> Ledger:
        had_content = path.is_file() and path.stat().st_size > 0
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.row_factory = sqlite3.Row
            version = cls._version(conn, path)
            if version == 0:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            if "full" in str(exc):
                raise LedgerError(
                    f"{path}: disk full ({exc}); nothing was recorded; free space and rerun"
                ) from None
            raise LedgerError(f"{path}: not a usable SQLite ledger ({exc})") from None
        if version == 0 and had_content:
            conn.close()
            raise LedgerError(
                f"{path}: the file holds no ledger tables (were they dropped?); nothing was "
                f"changed; restore the newest backup ({LEDGER_FILE}*{BACKUP_SUFFIX} beside it), "
                "or start a new ledger on purpose with `stagewise init "
                f"{folder} --new-ledger REASON`"
            )
        ledger = cls(path, conn)
        ledger._migrate(version)
        if read_head_file(path) is None and ledger.head != GENESIS:
            write_head_file(path, *ledger._last())  # a ledger from before the head file
        return ledger

    @classmethod
    def _start_over(cls, folder: Path, path: Path, reason: str) -> Ledger:
        """A new, empty ledger in a study that had one, recorded as such: the old file (if
        any) is moved aside, never deleted, and the first event names the head it replaces."""
        if not reason.strip():
            raise LedgerError("--new-ledger needs a reason (why the old ledger is gone)")
        stamp = utc_now().replace(":", "")
        backup = path.with_name(path.name + BACKUP_SUFFIX)
        wal = [path.with_name(path.name + sfx) for sfx in ("-wal", "-shm")]
        for old in (path, backup, *wal):
            if old.exists() and old.stat().st_size > 0:
                try:
                    os.replace(old, old.with_name(f"{old.name}.replaced-{stamp}"))
                except OSError as exc:
                    raise LedgerError(f"{old}: cannot move it aside ({exc})") from None
        previous = read_head_file(path)
        head_file(path).unlink(missing_ok=True)
        ledger = cls._connect(folder, path)
        ledger.log_event(
            "ledger.new",
            "ledger",
            {
                "reason": reason,
                "previous_head": previous[1] if previous else None,
                "previous_events": previous[0] if previous else None,
            },
        )
        return ledger

    def _last(self) -> tuple[int, str]:
        last = last_event(self._conn)
        return last if last is not None else (0, GENESIS)

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
        ledger.rebuilt = True
        with ledger._write() as conn:
            ledger._insert_runs(conn, runs)
            ledger._insert_freezes(conn, freezes)
            ledger._insert_decisions(conn, decisions)
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
            "runs": [[r.key, r.digest2] for r in map(run_row, self.runs())],
            "freezes": [[r.key, r.digest2] for r in map(freeze_row, self.freezes())],
            "decisions": [
                [r.key, r.digest2, not r.active] for r in map(decision_row, self.decisions())
            ],
            integrity.DIGEST_FORMAT_KEY: integrity.DIGEST_FORMAT,
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

    # ------------------------------------------------------------------ integrity
    def erased_chain_problems(self) -> list[str]:
        """A chain shorter than the one this study held before, or none at all: deleting events
        leaves a database consistent with itself, so it is compared with the head file and with
        what every ledger holds from its creation (the `ledger.migrate` baseline)."""
        problems = []
        last = last_event(self._conn)
        known = read_head_file(self.path)
        if last is None:
            problems.append(
                "the event chain is empty (every ledger holds its creation event): its events "
                "were deleted"
            )
        elif not self._conn.execute(
            "SELECT 1 FROM events WHERE kind = ? LIMIT 1", (integrity.BASELINE_KIND,)
        ).fetchone():
            problems.append("the event chain holds no baseline (ledger.migrate) event")
        if known is not None:
            row = self._conn.execute(
                "SELECT hash FROM events WHERE seq = ?", (known[0],)
            ).fetchone()
            if row is None or str(row[0]) != known[1]:
                have = f"ends at event {last[0]}" if last else "holds no event"
                problems.append(
                    f"the chain {have}, but {HEAD_FILE} records event {known[0]} with head "
                    f"{known[1]}: events were deleted or rewritten"
                )
        return problems

    def integrity_problems(
        self,
        runs: Sequence[RunRecord] | None = None,
        freezes: Sequence[FreezeRecord] | None = None,
        decisions: Sequence[DecisionRecord] | None = None,
    ) -> list[str]:
        """The chain's own links first, then every table row that disagrees with the chain.

        A caller that has just read the tables (`StudySnapshot.read`) passes those records, so
        they are checked without reading the tables a second time."""
        problems = self.erased_chain_problems() + self.verify_chain()
        chain = integrity.commitments(
            (int(r[0]), str(r[1]), json.loads(r[2]))
            for r in self._conn.execute("SELECT seq, kind, payload FROM events ORDER BY seq")
        )
        freezes = self.freezes() if freezes is None else freezes
        for f in freezes:
            if sha256_text(f.canonical) != f.sha256:
                problems.append(
                    f"freeze {f.gate} #{f.id} (event {f.event_seq}): its canonical text does "
                    "not hash to its sha256"
                )
        problems += integrity.compare(
            chain,
            map(run_row, self.runs() if runs is None else runs),
            map(freeze_row, freezes),
            map(decision_row, self.decisions() if decisions is None else decisions),
        )
        return problems

    def require_unerased(self) -> None:
        """The cheap part of `require_intact` that a run needs before it records anything:
        refuse a ledger whose chain was erased or cut short."""
        problems = self.erased_chain_problems()
        if problems:
            raise LedgerError(
                f"{self.path}: integrity check failed at {problems[0]}; restore the ledger "
                "from a backup or a bundle you trust"
            )

    def require_intact(self, problems: Sequence[str] | None = None) -> str:
        """Refuse to read a study whose chain is broken or whose tables disagree with it;
        return the chain head otherwise. `problems`: `integrity_problems()` already computed."""
        problems = self.integrity_problems() if problems is None else problems
        if problems:
            more = f" (and {len(problems) - 1} more; `stagewise status` lists them)"
            raise LedgerError(
                f"{self.path}: integrity check failed at {problems[0]}"
                + (more if len(problems) > 1 else "")
                + "; restore the ledger from a backup or a bundle you trust"
            )
        return self.head
