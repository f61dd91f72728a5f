from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from stagewise.errors import DecisionError, LedgerError
from stagewise.ledger import Ledger, RunKey, sha256_text
from stagewise.ledger.schema import MIGRATIONS, SCHEMA_VERSION
from stagewise.ledger.store import EVENT_FORMAT


def _worker(folder: str, worker: int, n: int) -> None:
    with Ledger.open(folder) as ledger:
        for i in range(n):
            key = RunKey("s", f"c{worker}", i, "h")
            ledger.ensure_runs([key])
            owner = f"w{worker}"
            assert ledger.claim(key, owner) is not None
            ledger.finish(key, "succeeded", summary={"val_bpb": worker + i / 1000}, owner=owner)
            # Every worker also competes for the same shared runs: exactly one may win each.
            shared = RunKey("shared", "c", i, "h")
            ledger.ensure_runs([shared])
            if ledger.claim(shared, owner) is not None:
                ledger.finish(shared, "succeeded", summary={"val_bpb": float(worker)}, owner=owner)


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    Ledger.open(tmp_path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with Ledger.open(tmp_path) as ledger:
        own = [r for r in ledger.runs() if r.stage == "s"]
        assert len(own) == 60
        assert {(r.condition_id, r.seed) for r in own} == {
            (f"c{w}", i) for w in range(4) for i in range(15)
        }
        assert all(r.status == "succeeded" and r.attempts == 1 for r in own)
        shared = [r for r in ledger.runs() if r.stage == "shared"]
        assert len(shared) == 15 and all(r.attempts == 1 for r in shared)
        started = [e for e in ledger.events() if e.kind == "run.started"]
        assert len(started) == 75
        assert ledger.verify_chain() == []


def test_chain_detects_tampering(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        ledger.log_event("note", "x", {"a": 1})
        ledger.log_event("note", "y", {"b": 2})
        assert ledger.verify_chain() == []
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("UPDATE events SET payload = '{\"a\":2}' WHERE subject = 'x'")
    conn.commit()
    conn.close()
    with Ledger.open(tmp_path) as ledger:
        problems = ledger.verify_chain()
    assert problems and "hash does not match" in problems[0]


def test_old_schema_is_upgraded_with_a_backup(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    for statement in MIGRATIONS[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute(
        "INSERT INTO runs (stage, condition_id, seed, host, status, created_at, val_bpb) "
        "VALUES ('s', 'c', 1, 'h', 'succeeded', 'then', 1.25)"
    )
    conn.commit()
    conn.close()
    with Ledger.open(tmp_path) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        run = ledger.run(RunKey("s", "c", 1, "h"))
        assert run is not None and run.val_bpb == 1.25 and run.checkpoint_sha256 is None
        assert any(e.kind == "ledger.migrate" for e in ledger.events())
    assert (tmp_path / "ledger.sqlite.v1.bak").exists()


def test_newer_schema_is_refused_with_the_fix(tmp_path: Path) -> None:
    Ledger.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="pip install -U stagewise"):
        Ledger.open(tmp_path)


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / "ledger.sqlite").write_text("not sqlite at all" * 100)
    with pytest.raises(LedgerError, match="not a usable SQLite ledger"):
        Ledger.open(tmp_path)


def test_manual_decision_blocks_computed_until_withdrawn(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        ledger.record_decision(
            "g", "manual", ["a"], reason="judgement", source="me", frozen_sha256=None, payload={}
        )
        with pytest.raises(DecisionError, match="withdraw it first"):
            ledger.record_decision(
                "g", "computed", ["b"], reason=None, source=None, frozen_sha256="x", payload={}
            )
        ledger.withdraw_decision("g", "recompute")
        ledger.record_decision(
            "g", "computed", ["b"], reason=None, source=None, frozen_sha256="x", payload={}
        )
        active = ledger.active_decision("g")
        assert active is not None and active.promoted == ("b",)
        kinds = [e.kind for e in ledger.events("decision")]
        assert kinds == ["decision.manual", "decision.withdrawn", "decision.computed"]


def test_claim_is_exclusive_and_finish_respects_owner(tmp_path: Path) -> None:
    key = RunKey("s", "c", 1, "h")
    with Ledger.open(tmp_path) as ledger:
        assert ledger.ensure_runs([key, key]) == 1
        assert ledger.claim(key, "a") is not None
        assert ledger.claim(key, "b") is None
        assert ledger.mark_interrupted(key, "a", "driver died")
        assert ledger.claim(key, "b") is not None
        ledger.finish(key, "succeeded", summary={"val_bpb": 9.0}, owner="a")  # stale owner: ignored
        run = ledger.run(key)
        assert run is not None and run.status == "running" and run.owner == "b"
        ledger.finish(key, "succeeded", summary={"val_bpb": 1.5}, owner="b")
        run = ledger.run(key)
        assert (
            run is not None
            and run.status == "succeeded"
            and run.val_bpb == 1.5
            and run.attempts == 2
        )


def _v2_ledger(folder: Path) -> None:
    """A schema-v2 ledger as the code before issue 18 left it: one imported run, one freeze,
    one decision, their events hashed the v1 way."""
    from stagewise.ledger.store import GENESIS, _event_hash

    conn = sqlite3.connect(folder / "ledger.sqlite")
    for version in (1, 2):
        for statement in MIGRATIONS[version]:
            conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    conn.execute(
        "INSERT INTO runs (stage, condition_id, seed, host, status, created_at, val_bpb) "
        "VALUES ('s', 'c', 1, 'h', 'succeeded', 'then', 1.25)"
    )
    prev = GENESIS
    for kind, subject, payload in [
        ("import", "r.csv", '{"added":1}'),
        ("gate.freeze", "g", '{"sha256":"x"}'),
    ]:
        digest = _event_hash(prev, "then", kind, subject, payload)
        conn.execute(
            "INSERT INTO events (ts, kind, subject, payload, prev_hash, hash) VALUES (?,?,?,?,?,?)",
            ("then", kind, subject, payload, prev, digest),
        )
        prev = digest
    conn.execute(
        "INSERT INTO freezes (gate, kind, sha256, canonical, frozen_at, post_hoc, reason, "
        "results_at_freeze, event_seq) VALUES ('g', 'freeze', ?, '{}', 'then', 0, NULL, '[]', 2)",
        (sha256_text("{}"),),
    )
    conn.commit()
    conn.close()


def test_v2_ledger_upgrades_to_a_chain_that_covers_its_data(tmp_path: Path) -> None:
    _v2_ledger(tmp_path)
    with Ledger.open(tmp_path, create=False) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION >= 3
        assert ledger.integrity_problems() == []
        baseline = ledger.events("ledger.migrate")[-1]
        assert baseline.format == EVENT_FORMAT and len(baseline.payload["runs"]) == 1
        assert len(baseline.payload["freezes"]) == 1
        head = ledger.head
    assert (tmp_path / "ledger.sqlite.v2.bak").is_file()
    # What the baseline committed to can no longer change unnoticed.
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("UPDATE runs SET val_bpb = 1.0")
    conn.execute("UPDATE freezes SET post_hoc = 1")
    conn.commit()
    conn.close()
    with Ledger.open(tmp_path, create=False) as ledger:
        problems = ledger.integrity_problems()
        assert ledger.head == head  # the chain itself is intact; the tables are not
    assert any("run s/c/seed1/h" in p and "event 3" in p for p in problems), problems
    assert any("freeze g #1" in p for p in problems), problems


def test_every_write_commits_to_what_it_wrote(tmp_path: Path) -> None:
    key = RunKey("s", "c", 1, "h")
    with Ledger.open(tmp_path) as ledger:
        ledger.ensure_runs([key])
        assert ledger.claim(key, "me") is not None
        ledger.finish(key, "succeeded", summary={"val_bpb": 1.5, "num_steps": 3}, owner="me")
        ledger.record_imports(
            [
                {
                    "stage": "s",
                    "condition_id": "d",
                    "seed": 1,
                    "host": "h",
                    "status": "succeeded",
                    "val_bpb": 1.4,
                    "_line": 2,
                }
            ],
            "r.csv",
        )
        ledger.record_freeze(
            "g",
            "freeze",
            sha256_text("{}"),
            "{}",
            post_hoc=True,
            reason=None,
            results_at_freeze=[{"c": 1}],
        )
        ledger.record_decision(
            "g", "computed", ["c"], reason=None, source=None, frozen_sha256="x", payload={}
        )
        ledger.record_decision(
            "g", "computed", ["d"], reason=None, source=None, frozen_sha256="x", payload={}
        )
        ledger.withdraw_decision("g", "redo")
        assert ledger.integrity_problems() == []
    assert (tmp_path / "ledger.sqlite.bak").is_file()  # refreshed after each such record
    tampers = {
        "UPDATE runs SET num_steps = 4 WHERE condition_id = 'c'": "run s/c/seed1/h",
        "UPDATE runs SET val_bpb = 1.3 WHERE condition_id = 'd'": "run s/d/seed1/h",
        "DELETE FROM runs WHERE condition_id = 'd'": "missing from the runs table",
        "UPDATE freezes SET reason = 'why not'": "freeze g #1",
        "UPDATE decisions SET promoted = '[\"d\"]' WHERE id = 1": "decision g #1",
        "UPDATE decisions SET withdrawn_at = NULL WHERE id = 1": "decision g #1",
        "UPDATE events SET payload = replace(payload, '1.5', '1.2') WHERE kind = 'run.succeeded'": (
            "hash does not match"
        ),
    }
    pristine = (tmp_path / "ledger.sqlite").read_bytes()
    for statement, needle in tampers.items():
        (tmp_path / "ledger.sqlite").write_bytes(pristine)
        conn = sqlite3.connect(tmp_path / "ledger.sqlite")
        assert conn.execute(statement).rowcount == 1, statement
        conn.commit()
        conn.close()
        with Ledger.open(tmp_path, create=False) as ledger:
            problems = ledger.integrity_problems()
            assert any(needle in p for p in problems), (statement, problems)
            with pytest.raises(LedgerError, match="integrity check failed"):
                ledger.require_intact()
