"""The foundation commands driven as a user would, through the real CLI in tmp folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.smoke
def test_paper06_example_plan_import_status(tmp_path: Path) -> None:
    study = tmp_path / "p"
    run_cli("init", study, "--example", "paper06", check=True)
    assert (study / "results" / "stage3_12h.csv").is_file()
    assert (study / "published" / "stage3_12h_pooled.csv").is_file()
    assert "ok: paper06: 12 conditions" in run_cli("validate", study, check=True).stdout

    plan = json.loads(run_cli("plan", study, "--json", check=True).stdout)
    assert plan["total_budgeted_gpu_hours"] == 169.2
    hours = {s["stage"]: s["budgeted_gpu_hours"] for s in plan["stages"]}
    assert hours == {
        "stage0": 0.2,
        "stage1a": 2.0,
        "stage1b": 4.0,
        "stage1c": 3.0,
        "stage2a": 8.0,
        "stage2b": 8.0,
        "stage3": 72.0,
        "stage3b": 72.0,
    }
    assert all(
        s["decision_manual"]
        for s in plan["stages"]
        if s["stage"] in ("stage1c", "stage2a", "stage3")
    )
    assert "169.2" in run_cli("plan", study, check=True).stdout

    cells = study / "results" / "stage3_12h.csv"
    assert "12 recorded" in run_cli("import", study, cells, check=True).stdout
    s1 = run_cli("status", study, "--json", check=True).stdout
    assert "12 already present" in run_cli("import", study, cells, check=True).stdout
    assert run_cli("status", study, "--json", check=True).stdout == s1

    bad = tmp_path / "bad.csv"
    lines = cells.read_text().splitlines()
    lines[1] = lines[1].replace(",windows-a100,", ",nowhere,")
    bad.write_text("\n".join(lines) + "\n")
    ledger = study / "ledger.sqlite"
    before = hashlib.sha256(ledger.read_bytes()).hexdigest()
    proc = run_cli("import", study, bad)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.csv: row 2: host: unknown host 'nowhere'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == before
    assert run_cli("status", study, "--json", check=True).stdout == s1
    status = json.loads(s1)
    by_stage = {s["stage"]: s for s in status["stages"]}
    assert by_stage["stage3"]["runs"]["succeeded"] == 6 and by_stage["stage3"]["complete"]
    assert status["chain_ok"]


def test_template_init_and_manual_decisions(tmp_path: Path) -> None:
    study = tmp_path / "t"
    run_cli("init", study, check=True)
    plan = json.loads(run_cli("plan", study, "--json", check=True).stdout)
    confirm = plan["stages"][1]
    assert confirm["status"] == "pending (at most)" and confirm["candidates"] is None
    # 3 candidates x 40 s at the screen; at most 2 x 2 seeds x 2 minutes at the confirmation.
    assert plan["total_budgeted_gpu_hours"] == round(3 * 40 / 3600 + 2 * 2 * 120 / 3600, 9)

    proc = run_cli(
        "decide", study, "g_screen", "--promote", "wide,ref", "--reason", "looked best on a plot"
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(run_cli("plan", study, "--json", check=True).stdout)
    assert plan["stages"][1]["candidates"] == ["ref", "wide"]
    assert plan["stages"][1]["decision_manual"] is True
    status = json.loads(run_cli("status", study, "--json", check=True).stdout)
    gate = next(g for g in status["gates"] if g["gate"] == "g_screen")
    assert (
        gate["decision"]["manual"] is True and gate["decision"]["reason"] == "looked best on a plot"
    )

    refused = run_cli(
        "decide", study, "g_screen", "--promote", "deep", "--reason", "changed my mind"
    )
    assert refused.returncode == 2 and "withdraw it first" in refused.stderr
    run_cli("decide", study, "g_screen", "--withdraw", "--reason", "superseded", check=True)
    run_cli(
        "decide", study, "g_screen", "--promote", "deep", "--reason", "changed my mind", check=True
    )


@pytest.mark.smoke
def test_user_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    cases = [
        ("validate", tmp_path / "absent"),
        ("init", tmp_path / "x", "--example", "nope"),
        ("plan", tmp_path),
    ]
    for args in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ")
    usage = run_cli("plan")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_every_command_has_help() -> None:
    top = run_cli("--help", check=True).stdout
    commands = [
        line.split()[0]
        for line in top.split("Commands:")[1].splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    ]
    assert {"init", "validate", "plan", "status", "import", "decide"} <= set(commands)
    for command in commands:
        assert run_cli(command, "--help", check=True).stdout.startswith("Usage:")
