"""Upgrading a schema-v1 ledger written by an earlier stagewise (a committed binary asset)."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from stagewise.ledger import Ledger
from stagewise.ledger.schema import SCHEMA_VERSION
from stagewise.study.init import write_study_files
from tests.conftest import run_cli

ASSET = Path(__file__).parent / "assets" / "ledger_v1.sqlite"
FROZEN_G12H = "22a8b54bf543e621efac2446e0ee18725d4df62b6e542a91011df082ec1382a4"


@pytest.fixture
def v1_study(tmp_path: Path) -> Path:
    """The paper06 example folder with the v1 ledger in place of a new one."""
    folder = write_study_files(tmp_path / "p", "paper06")
    shutil.copyfile(ASSET, folder / "ledger.sqlite")
    return folder


def test_the_asset_is_schema_v1(tmp_path: Path) -> None:
    # Read a copy: SQLite would put -wal/-shm files beside a WAL database, even read-only.
    copy = tmp_path / "v1.sqlite"
    shutil.copyfile(ASSET, copy)
    conn = sqlite3.connect(copy)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    finally:
        conn.close()
    assert version == ("1",)
    assert "val_bpb" in columns and "checkpoint_sha256" not in columns  # added by v2


def test_upgrade_keeps_every_record_and_the_chain(v1_study: Path) -> None:
    with Ledger.open(v1_study) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION > 1
        runs = ledger.runs()
        decisions = ledger.decisions()
        freezes = ledger.freezes("g12h")
        events = ledger.events()
        problems = ledger.verify_chain()
    # The v1 file is kept, byte for byte, beside the upgraded one.
    assert (v1_study / "ledger.sqlite.v1.bak").read_bytes() == ASSET.read_bytes()
    assert problems == []
    with (v1_study / "results" / "stage3_12h.csv").open(newline="") as fh:
        published = {
            (r["stage"], r["condition_id"], int(r["seed"]), r["host"]): float(r["val_bpb"])
            for r in csv.DictReader(fh)
        }
    assert len(published) == 12
    assert {(r.stage, r.condition_id, r.seed, r.host): r.val_bpb for r in runs} == published
    assert all(r.status == "succeeded" and r.checkpoint_sha256 is None for r in runs)
    assert [(d.gate, d.kind, d.active) for d in decisions] == [
        ("g10a", "manual", True),
        ("g10", "manual", True),
        ("g60", "manual", True),
    ]
    assert [f.sha256 for f in freezes] == [FROZEN_G12H]
    kinds = [e.kind for e in events]
    assert kinds[:7] == [
        "ledger.migrate",
        "study.init",
        "decision.manual",
        "decision.manual",
        "decision.manual",
        "gate.freeze",
        "import",
    ]
    assert events[-1].kind == "ledger.migrate" and events[-1].payload["from"] == 1


def test_upgraded_ledger_serves_the_cli(v1_study: Path) -> None:
    # The freeze written by the earlier version still matches the gate as the study states it,
    # so the gate applies and gives the published verdicts.
    out = run_cli("gate", v1_study, "g12h", "--json", check=True)
    gate = json.loads(out.stdout)
    assert gate["frozen_sha256"] == FROZEN_G12H
    assert {c["label"]: c["verdict"] for c in gate["conditions"]} == {
        "bridge": "pass",
        "greedy": "fail",
        "d8/ar48": "fail",
    }
    plan = json.loads(run_cli("plan", v1_study, "--json", check=True).stdout)
    assert plan["total_budgeted_gpu_hours"] == 169.2
