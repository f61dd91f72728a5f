"""Ledger schema, versioned. Each migration takes the database from version N-1 to N.

Old ledgers are upgraded in place when opened; a ledger newer than this code is refused with
the command that fixes it (upgrading stagewise).
"""

from __future__ import annotations

SCHEMA_VERSION = 5

SUMMARY_FIELDS = (
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
)

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            stage TEXT NOT NULL,
            condition_id TEXT NOT NULL,
            seed INTEGER NOT NULL,
            host TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            cause TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            source TEXT,
            owner TEXT,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            val_bpb REAL,
            training_seconds REAL,
            total_seconds REAL,
            peak_vram_mb REAL,
            mfu_percent REAL,
            total_tokens_M REAL,
            num_steps INTEGER,
            num_params_M REAL,
            depth INTEGER,
            summary_json TEXT,
            log_path TEXT,
            checkpoint_path TEXT,
            UNIQUE (stage, condition_id, seed, host)
        )""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            ts TEXT NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            payload TEXT NOT NULL,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE
        )""",
        """CREATE TABLE freezes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            gate TEXT NOT NULL,
            kind TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            canonical TEXT NOT NULL,
            frozen_at TEXT NOT NULL,
            post_hoc INTEGER NOT NULL,
            reason TEXT,
            results_at_freeze TEXT NOT NULL,
            event_seq INTEGER NOT NULL
        )""",
        """CREATE TABLE decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            gate TEXT NOT NULL,
            kind TEXT NOT NULL,
            promoted TEXT NOT NULL,
            reason TEXT,
            source TEXT,
            frozen_sha256 TEXT,
            payload TEXT NOT NULL,
            decided_at TEXT NOT NULL,
            withdrawn_at TEXT,
            withdraw_reason TEXT,
            event_seq INTEGER NOT NULL
        )""",
        "CREATE INDEX runs_stage ON runs (stage, status)",
        "CREATE INDEX freezes_gate ON freezes (gate, id)",
        "CREATE INDEX decisions_gate ON decisions (gate, id)",
    ],
    # v2: keep the checkpoint hash and the log tail beside each run for audits without the files.
    2: [
        "ALTER TABLE runs ADD COLUMN checkpoint_sha256 TEXT",
        "ALTER TABLE runs ADD COLUMN log_tail TEXT",
    ],
    # v3: the chain commits to the data (ledger.integrity). Events hashed field by field carry
    # format 2; the migration event itself holds the digests of everything recorded before.
    3: [
        "ALTER TABLE events ADD COLUMN format INTEGER NOT NULL DEFAULT 1",
    ],
    # v4: the cluster jobs that carry runs (Slurm), recorded at submission before any wait, so a
    # restarted driver re-attaches to them instead of submitting a run twice. A table of its
    # own: run rows and the chain's commitments to them are unchanged.
    4: [
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            stage TEXT NOT NULL,
            condition_id TEXT NOT NULL,
            seed INTEGER NOT NULL,
            host TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            executor TEXT NOT NULL,
            job_id TEXT NOT NULL,
            folder TEXT,
            log_path TEXT,
            state TEXT,
            reason TEXT,
            node TEXT,
            submitted_at TEXT NOT NULL,
            updated_at TEXT,
            ended INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX jobs_run ON jobs (stage, condition_id, seed, host, attempt)",
    ],
    # v5: each run records the sha256 of the resolved recipe it trained; `recipes` holds each
    # recipe's canonical text once, under its sha256 (executors/recipe.py, gates/freeze.py).
    5: [
        "ALTER TABLE runs ADD COLUMN recipe_sha256 TEXT",
        """CREATE TABLE recipes (
            sha256 TEXT PRIMARY KEY,
            canonical TEXT NOT NULL,
            recorded_at TEXT NOT NULL
        )""",
    ],
}
