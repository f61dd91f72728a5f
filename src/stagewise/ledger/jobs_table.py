"""The jobs table (schema v4): which cluster job carries which attempt of a run.

A cluster executor (Slurm) hands runs to a scheduler that outlives the driver. The driver writes
each job id here the moment the scheduler accepts the job, before it waits for anything, so a
driver started after a SIGKILL re-attaches to the jobs of the runs it finds `running` instead of
submitting them again (`executors.recovery`). The submission is an event on the chain; the
state updates that follow (`PENDING` -> `RUNNING` -> ...) are bookkeeping for `stagewise
status` and change no result, so they are not.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from stagewise.ledger.core import LedgerCore, utc_now
from stagewise.ledger.records import JobRecord, RunKey

_JOB_COLUMNS = (
    "stage, condition_id, seed, host, attempt, executor, job_id, folder, log_path, state, "
    "reason, node, submitted_at, updated_at, ended"
)
_KEY_WHERE = "stage=? AND condition_id=? AND seed=? AND host=?"


def _key_args(key: RunKey) -> tuple[Any, ...]:
    return (key.stage, key.condition_id, key.seed, key.host)


class JobsTable(LedgerCore):
    """The jobs part of `Ledger`."""

    @staticmethod
    def _job(row: sqlite3.Row) -> JobRecord:
        return JobRecord(
            key=RunKey(row["stage"], row["condition_id"], int(row["seed"]), row["host"]),
            attempt=int(row["attempt"]),
            executor=row["executor"],
            job_id=row["job_id"],
            folder=row["folder"],
            log_path=row["log_path"],
            state=row["state"],
            reason=row["reason"],
            node=row["node"],
            submitted_at=row["submitted_at"],
            updated_at=row["updated_at"],
            ended=bool(row["ended"]),
        )

    def record_job(
        self,
        key: RunKey,
        attempt: int,
        executor: str,
        job_id: str,
        *,
        folder: str | None = None,
        log_path: str | None = None,
        state: str = "SUBMITTED",
    ) -> None:
        """The scheduler accepted `job_id` for this attempt of `key`: write it down now."""
        with self._write() as conn:
            now = utc_now()
            conn.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,NULL,NULL,?,?,0)",
                (*_key_args(key), attempt, executor, job_id, folder, log_path, state, now, now),
            )
            self._append(
                conn,
                "run.submitted",
                str(key),
                {"attempt": attempt, "executor": executor, "job_id": job_id},
            )

    def update_job(
        self,
        key: RunKey,
        attempt: int,
        job_id: str,
        *,
        state: str | None = None,
        reason: str | None = None,
        node: str | None = None,
        ended: bool = False,
    ) -> bool:
        """The scheduler's latest word on a job. None keeps what was recorded, except that a
        new state replaces the reason too (a RUNNING job no longer waits for `Resources`)."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET state=COALESCE(?, state), "
                "reason=CASE WHEN ? IS NULL THEN reason ELSE ? END, "
                "node=COALESCE(?, node), updated_at=?, ended=MAX(ended, ?) "
                f"WHERE {_KEY_WHERE} AND attempt=? AND job_id=?",
                (
                    state,
                    state,
                    reason,
                    node,
                    utc_now(),
                    int(ended),
                    *_key_args(key),
                    attempt,
                    job_id,
                ),
            )
            return bool(cur.rowcount)

    def jobs(self, stage: str | None = None, key: RunKey | None = None) -> list[JobRecord]:
        """Recorded jobs, oldest first (of one stage, or of one run)."""
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE 1=1"
        args: list[Any] = []
        if stage is not None:
            sql += " AND stage=?"
            args.append(stage)
        if key is not None:
            sql += f" AND {_KEY_WHERE}"
            args += _key_args(key)
        return [self._job(r) for r in self._conn.execute(sql + " ORDER BY id", args)]

    def open_job(self, key: RunKey, attempt: int) -> JobRecord | None:
        """The newest job of this attempt whose outcome was not collected yet, if any."""
        row = self._conn.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {_KEY_WHERE} AND attempt=? AND ended=0 "
            "ORDER BY id DESC LIMIT 1",
            (*_key_args(key), attempt),
        ).fetchone()
        return self._job(row) if row else None

    def close_settled_jobs(self) -> int:
        """Mark collected the open jobs whose attempt is no longer running (a driver killed
        between recording a run's outcome and closing its job); returns how many."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET ended=1, updated_at=? WHERE ended=0 AND NOT EXISTS (SELECT 1 "
                "FROM runs r WHERE r.stage=jobs.stage AND r.condition_id=jobs.condition_id AND "
                "r.seed=jobs.seed AND r.host=jobs.host AND r.status='running' AND "
                "r.attempts=jobs.attempt)",
                (utc_now(),),
            )
            return int(cur.rowcount)

    def latest_jobs(self) -> dict[RunKey, JobRecord]:
        """Each run's newest job (what `stagewise status` shows)."""
        out: dict[RunKey, JobRecord] = {}
        for job in self.jobs():
            out[job.key] = job
        return out


__all__ = ["JobsTable"]
