"""Ledger v5: each run records the sha256 of the recipe it trained, the text kept once in
`recipes`; the chain commits to it; a v4 ledger upgrades in place."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from stagewise.errors import LedgerError
from stagewise.ledger import Ledger, RunKey, canonical_json, sha256_text
from stagewise.ledger.schema import SCHEMA_VERSION

KEY = RunKey("s1", "c_a", 1, "block-a")
TEXT = canonical_json({"condition_id": "c_a", "matrix": {"matrix_lr": 0.04}})
RECIPE = (sha256_text(TEXT), TEXT)


def test_a_claim_records_the_recipe_and_the_chain_commits_to_it(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        ledger.ensure_runs([KEY])
        ledger.claim(KEY, "me", recipe=RECIPE)
        ledger.finish(KEY, "succeeded", summary={"val_bpb": 1.5}, owner="me")
        run = ledger.run(KEY)
        assert run is not None and run.recipe_sha256 == RECIPE[0]
        assert ledger.recipe_texts() == {RECIPE[0]: TEXT}
        assert ledger.events("run.started")[-1].payload["recipe_sha256"] == RECIPE[0]
        assert ledger.integrity_problems() == []
        other = RunKey("s1", "c_b", 1, "block-a")
        ledger.ensure_runs([other])
        with pytest.raises(LedgerError, match="does not hash"):
            ledger.claim(other, "me", recipe=("0" * 64, TEXT))
        assert ledger.run(other).status == "pending"  # type: ignore[union-attr]
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("UPDATE runs SET recipe_sha256 = ?", ("f" * 64,))
    conn.commit()
    conn.close()
    with Ledger.open(tmp_path, create=False) as ledger:
        problems = ledger.integrity_problems()
    assert any("s1/c_a/seed1/block-a" in p and "differs from what event" in p for p in problems)


def test_a_v4_ledger_upgrades_to_v5_keeping_runs_and_chain(tmp_path: Path) -> None:
    with Ledger.open(tmp_path) as ledger:
        ledger.ensure_runs([KEY])
        ledger.claim(KEY, "me")
        ledger.finish(KEY, "succeeded", summary={"val_bpb": 1.25}, owner="me")
        head = ledger.head
    conn = sqlite3.connect(tmp_path / "ledger.sqlite")
    conn.execute("DROP TABLE recipes")
    conn.execute("ALTER TABLE runs DROP COLUMN recipe_sha256")
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Ledger.open(tmp_path, create=False) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION == 5
        assert (tmp_path / "ledger.sqlite.v4.bak").is_file()
        assert ledger.events()[-2].hash == head and ledger.events()[-1].kind == "ledger.migrate"
        run = ledger.run(KEY)
        assert run is not None and run.val_bpb == 1.25 and run.recipe_sha256 is None
        assert ledger.integrity_problems() == []
        second = RunKey("s1", "c_a", 2, "block-a")
        ledger.ensure_runs([second])
        ledger.claim(second, "me", recipe=RECIPE)
        ledger.finish(second, "succeeded", summary={"val_bpb": 1.3}, owner="me")
        assert ledger.integrity_problems() == []
