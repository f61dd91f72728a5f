"""The runs table: planned, claimed, finished and imported runs, each change on the chain."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from stagewise.errors import ImportRejected, LedgerError
from stagewise.ledger import integrity
from stagewise.ledger.core import LedgerCore, key_sha, run_row, utc_now
from stagewise.ledger.integrity import canonical_json
from stagewise.ledger.records import RunKey, RunRecord
from stagewise.ledger.schema import SUMMARY_FIELDS

_RUN_COLUMNS = (
    "stage, condition_id, seed, host, status, cause, attempts, source, owner, created_at, "
    "started_at, finished_at, " + ", ".join(SUMMARY_FIELDS) + ", summary_json, log_path, "
    "checkpoint_path, checkpoint_sha256, log_tail, recipe_sha256"
)
# The RunRecord fields after its key, in column order (split once: runs() reads every row).
_RUN_FIELDS = tuple(c.strip() for c in _RUN_COLUMNS.split(",")[4:])


class RunsTable(LedgerCore):
    """The runs part of `Ledger`: planned rows, claims, results and imports."""

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

    def claim(
        self,
        key: RunKey,
        owner: str,
        *,
        retry_failed: bool = False,
        recipe: tuple[str, str] | None = None,
        replace_finished: bool = False,
    ) -> RunRecord | None:
        """Atomically move a run to `running` for `owner`; None if it is not claimable.

        `recipe` = (sha256, canonical text) of the resolved recipe this attempt trains: the
        run records its hash and the ledger keeps the text (`recipes`). `replace_finished`
        claims a finished run of another recipe too; the result it replaces is written into
        the `run.started` event, so the chain keeps it.
        """
        claimable: tuple[str, ...] = (
            ("pending", "interrupted", "failed") if retry_failed else ("pending", "interrupted")
        )
        before = self.run(key) if replace_finished else None
        if replace_finished:
            claimable = ("pending", "interrupted", "failed", "succeeded")
            if before is None or recipe is None or before.recipe_sha256 in (None, recipe[0]):
                return None  # nothing to replace: the run is not of another recipe
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE runs SET status='running', owner=?, started_at=?, finished_at=NULL, "
                f"cause=NULL, attempts=attempts+1 WHERE stage=? AND condition_id=? AND seed=? "
                f"AND host=? AND status IN ({','.join('?' * len(claimable))})",
                (owner, utc_now(), key.stage, key.condition_id, key.seed, key.host, *claimable),
            )
            if not cur.rowcount:
                return None
            payload: dict[str, Any] = {"owner": owner, "key_sha256": key_sha(key)}
            if before is not None and before.status in ("succeeded", "failed"):
                payload["replaces"] = {
                    "status": before.status,
                    "val_bpb": before.val_bpb,
                    "recipe_sha256": before.recipe_sha256,
                    "finished_at": before.finished_at,
                }
            if recipe is not None:
                conn.execute(
                    "UPDATE runs SET recipe_sha256=? WHERE stage=? AND condition_id=? AND "
                    "seed=? AND host=?",
                    (recipe[0], key.stage, key.condition_id, key.seed, key.host),
                )
                self._store_recipe(conn, *recipe)
                payload["recipe_sha256"] = recipe[0]
            self._append(conn, "run.started", str(key), payload)
        return self.run(key)

    # ------------------------------------------------------------------ recipes
    @staticmethod
    def _store_recipe(conn: sqlite3.Connection, sha256: str, canonical: str) -> None:
        if integrity.sha256_text(canonical) != sha256:
            raise LedgerError(f"recipe {sha256[:12]}: its text does not hash to its sha256")
        conn.execute(
            "INSERT OR IGNORE INTO recipes (sha256, canonical, recorded_at) VALUES (?,?,?)",
            (sha256, canonical, utc_now()),
        )

    def recipe_texts(self, shas: Iterable[str] | None = None) -> dict[str, str]:
        """sha256 -> canonical text of the recipes the ledger holds (all, or those named)."""
        rows = self._conn.execute("SELECT sha256, canonical FROM recipes ORDER BY sha256")
        wanted = None if shas is None else set(shas)
        return {r[0]: r[1] for r in rows if wanted is None or r[0] in wanted}

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

    def reattach(self, key: RunKey, old_owner: str, new_owner: str) -> bool:
        """A run still carried by a cluster job whose driver is gone passes to the new driver,
        which collects the job's outcome instead of running it again (same attempt)."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE runs SET owner=? WHERE stage=? AND condition_id=? AND seed=? AND host=? "
                "AND status='running' AND owner IS ?",
                (new_owner, key.stage, key.condition_id, key.seed, key.host, old_owner or None),
            )
            if cur.rowcount:
                self._append(
                    conn,
                    "run.reattached",
                    str(key),
                    {"from": old_owner, "owner": new_owner, "key_sha256": key_sha(key)},
                )
            return bool(cur.rowcount)

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

    def _result_commitment(self, key: RunKey) -> dict[str, Any]:
        """The digest of a run as written (read back, so SQLite's own typing is what counts)."""
        rec = self.run(key)
        if rec is None:
            raise LedgerError(f"run {key} vanished while it was being recorded")
        row = run_row(rec)
        return {
            "key_sha256": str(row.key),
            "result_sha256": row.digest2,
            integrity.DIGEST_FORMAT_KEY: integrity.DIGEST_FORMAT,
        }

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
                recipe = row.get("recipe")  # (sha256, canonical) the result declares it trained
                if recipe is not None:
                    self._store_recipe(conn, *recipe)
                conn.execute(
                    f"UPDATE runs SET status=?, cause=?, source=?, owner=NULL, started_at=NULL, "
                    f"finished_at=?, {sets}, summary_json=?, recipe_sha256=? WHERE stage=? AND "
                    "condition_id=? AND seed=? AND host=?",
                    (
                        row["status"],
                        row.get("cause"),
                        source,
                        now,
                        *(row.get(f) for f in SUMMARY_FIELDS),
                        canonical_json(row.get("summary") or summary)
                        if (row.get("summary") or summary)
                        else None,
                        recipe[0] if recipe is not None else None,
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
                        integrity.DIGEST_FORMAT_KEY: integrity.DIGEST_FORMAT,
                    },
                )
        return added, unchanged

    @staticmethod
    def _insert_runs(conn: sqlite3.Connection, runs: Iterable[RunRecord]) -> None:
        """Rows as given, inside the caller's transaction (`Ledger.rebuild`)."""
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


def _same_result(existing: RunRecord, row: Mapping[str, Any]) -> bool:
    if existing.status != row["status"]:
        return False
    if row["status"] != "succeeded":
        return True
    a, b = existing.val_bpb, row.get("val_bpb")
    return a is not None and b is not None and abs(float(a) - float(b)) <= 1e-12
