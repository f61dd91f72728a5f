"""A study frozen by the release before recipes were frozen (format 1, a committed asset) still
loads, applies and verifies, shown as "recipes not frozen (format 1)"."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from stagewise.gates.freeze import FORMAT, FORMAT_1, NOT_FROZEN_V1, frozen_recipes, parse
from stagewise.ledger import Ledger
from stagewise.ledger.schema import SCHEMA_VERSION
from tests.conftest import run_cli

ASSET = Path(__file__).parent / "assets" / "freeze_v1_study"
FROZEN_G1 = "f50da1673b951ceb2d297681af49489e79a168f0321749a7e82b4480c081f428"


@pytest.fixture
def v1_study(tmp_path: Path) -> Path:
    folder = tmp_path / "s"
    shutil.copytree(ASSET, folder)
    return folder


def test_the_asset_is_a_format_1_freeze_on_a_v3_ledger(tmp_path: Path) -> None:
    copy = tmp_path / "ledger.sqlite"
    shutil.copyfile(ASSET / "ledger.sqlite", copy)
    conn = sqlite3.connect(copy)
    try:
        version = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        (canonical,) = conn.execute("SELECT canonical FROM freezes").fetchone()
    finally:
        conn.close()
    assert version == ("3",)
    assert json.loads(canonical)["format"] == FORMAT_1


def test_a_format_1_freeze_still_applies(v1_study: Path, tmp_path: Path) -> None:
    gate = run_cli("gate", v1_study, "g1", "--json", check=True)
    result = json.loads(gate.stdout)
    assert result["frozen_sha256"] == FROZEN_G1
    assert result["freeze"]["recipes"] == NOT_FROZEN_V1
    assert result["promoted"] == ["c_a"] and "not_counted" not in result
    with Ledger.open(v1_study) as ledger:
        assert ledger.schema_version == SCHEMA_VERSION
        assert ledger.integrity_problems() == []
        record = ledger.current_freeze("g1")
        assert record is not None and frozen_recipes(record) is None
    status = run_cli("status", v1_study, check=True)
    assert NOT_FROZEN_V1 in status.stdout
    text = run_cli("gate", v1_study, "g1", check=False)
    assert NOT_FROZEN_V1 in text.stdout
    run_cli("bundle", v1_study, "--out", tmp_path / "b", check=True)
    verify = run_cli("verify", tmp_path / "b")
    assert verify.returncode == 0, verify.stdout


def test_recipes_are_not_covered_by_format_1_until_amended(v1_study: Path) -> None:
    matrix = v1_study / "matrix.csv"
    matrix.write_text(
        matrix.read_text().replace("c_b,comparator,2,48,0.04", "c_b,comparator,2,48,0.05")
    )
    # format 1 never committed to the matrix values: as before, the gate applies
    run_cli("gate", v1_study, "g1", "--json", check=True)
    run_cli("freeze", v1_study, "g1", "--amend", "--reason", "freeze the recipes", check=True)
    with Ledger.open(v1_study) as ledger:
        record = ledger.current_freeze("g1")
        assert record is not None and parse(record)["format"] == FORMAT
        assert (frozen_recipes(record) or {})["c_b"]["matrix"]["matrix_lr"] == 0.05
    matrix.write_text(
        matrix.read_text().replace("c_b,comparator,2,48,0.05", "c_b,comparator,2,48,0.04")
    )
    refused = run_cli("gate", v1_study, "g1", "--json")
    assert refused.returncode == 2 and "matrix.matrix_lr: 0.05 -> 0.04" in refused.stderr
