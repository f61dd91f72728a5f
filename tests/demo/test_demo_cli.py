"""`stagewise demo --quick` end to end: the ledger, decisions, report and bundle it leaves."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_quick_demo_leaves_a_complete_study(quick_demo: Path, tmp_path: Path) -> None:
    # The session's quick demo (shared with the browser test), copied so that resuming it here
    # leaves the shared one as the demo left it.
    text = (quick_demo.parent / "demo-stdout.txt").read_text()
    out = tmp_path / "demo"
    shutil.copytree(quick_demo, out)
    for fragment in (
        "gate g_screen: frozen",
        "gate g_replicate: frozen",
        "gate g_confirm: frozen",
        "stage screen:",
        "stage confirm:",
        "summary",
        "report:",
        "bundle:",
    ):
        assert fragment in text, fragment

    conn = sqlite3.connect(out / "ledger.sqlite")
    rows = conn.execute(
        "SELECT stage, status, COUNT(*) FROM runs GROUP BY stage, status"
    ).fetchall()
    freezes = conn.execute("SELECT gate, post_hoc FROM freezes ORDER BY id").fetchall()
    decisions = conn.execute(
        "SELECT gate, kind FROM decisions WHERE withdrawn_at IS NULL"
    ).fetchall()
    conn.close()
    by_stage = {stage: n for stage, status, n in rows if status == "succeeded"}
    assert not [r for r in rows if r[1] != "succeeded"]
    assert by_stage["screen"] == 12  # six recipes x one seed x two host blocks
    assert by_stage["replicate"] % 4 == 0 and by_stage["confirm"] % 4 == 0
    # Every gate was frozen before its stage ran, so no freeze is post hoc.
    assert [g for g, _ in freezes] == ["g_screen", "g_replicate", "g_confirm"]
    assert not any(post_hoc for _, post_hoc in freezes)
    assert sorted(g for g, _ in decisions) == ["g_confirm", "g_replicate", "g_screen"]

    confirm = json.loads((out / "decisions" / "g_confirm.json").read_text())
    assert confirm["kind"] == "confirm" and len(confirm["cells"]) == 4
    assert {c["verdict"] for c in confirm["conditions"]} <= {"pass", "fail", "untested"}
    assert (out / "report" / "report.html").stat().st_size > 10_000
    assert (out / "bundle" / "MANIFEST.json").is_file()
    assert run_cli("verify", out / "bundle").returncode == 0

    # Running it again resumes: nothing is rerun, the same decisions stand.
    again = run_cli("demo", "--out", out, "--quick")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "stage screen: all 12 runs succeeded before" in again.stdout  # the walk resumed
    assert "gate g_screen: frozen" not in again.stdout  # and froze nothing twice
    conn = sqlite3.connect(out / "ledger.sqlite")
    attempts = conn.execute("SELECT MAX(attempts) FROM runs").fetchone()[0]
    conn.close()
    assert attempts == 1


@pytest.mark.smoke
def test_demo_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    proc = run_cli("demo", "--out", tmp_path / "x", "--quick")
    assert proc.returncode == 2 and "not a demo study" in proc.stderr


@pytest.mark.slow
def test_a_demo_whose_runs_failed_is_finished_by_the_command_its_error_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every screen run fails (each warm worker dies at start, as one that could not import a
    module did); once the environment is fixed, the command the error names retries them and
    finishes the walk, the report and the bundle. `demo` again without it says the same."""
    import os
    import shlex

    out = tmp_path / "demo"
    broken = tmp_path / "site"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(
        "import os, sys\n"
        "if sys.argv[-1:] == ['worker']:\n"
        "    print(\"ModuleNotFoundError: No module named 'nowhere'\", file=sys.stderr, flush=True)\n"
        "    os._exit(1)\n"
    )
    fixed = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(broken), fixed]))
    failed = run_cli("demo", "--out", out, "--quick")
    assert failed.returncode == 1, failed.stdout[-2000:] + failed.stderr[-2000:]
    assert "stage screen: 0/12 succeeded, 12 failed" in failed.stdout
    errors = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: stage screen: 12 runs failed")
    named = f"stagewise demo --out {shlex.quote(str(out))} --quick --retry-failed"
    assert f"`{named}`" in errors[0], errors[0]
    assert "Traceback" not in failed.stdout + failed.stderr

    monkeypatch.setenv("PYTHONPATH", fixed)  # the cause, fixed
    again = run_cli("demo", "--out", out, "--quick")  # without --retry-failed: nothing reruns
    assert again.returncode == 1 and "12 failed before (--retry-failed reruns)" in again.stdout
    assert f"`{named}`" in again.stderr

    finished = run_cli(*shlex.split(named)[1:])
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert "stage screen: 12/12 succeeded, 0 failed" in finished.stdout
    assert "demo finished in" in finished.stdout
    conn = sqlite3.connect(out / "ledger.sqlite")
    rows = conn.execute("SELECT stage, status, attempts FROM runs").fetchall()
    conn.close()
    assert {status for _, status, _ in rows} == {"succeeded"}
    assert {stage for stage, _, _ in rows} == {"screen", "replicate", "confirm"}
    assert min(n for stage, _, n in rows if stage == "screen") >= 2  # failed first, then rerun
    assert (out / "report" / "report.html").is_file()
    assert run_cli("verify", out / "bundle").returncode == 0
