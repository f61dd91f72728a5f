"""Issue 30, the ledger half: a forger who knows the format, and data that must never be lost.

Items 2 (an erased chain is not "intact"), 3 (every field of a run is committed), 7 (no
silent data loss), 8 (writes stay inside the study), 9 (frozen means the hosts too), 10 (one
line and exit 2 for every bad input) and 11 (ids a terminal and an SVG can carry). Each test
failed on the code before issue 30.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from stagewise.executors.external import import_results
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import freeze
from stagewise.ledger import Ledger
from stagewise.ledger.core import HEAD_FILE
from stagewise.study import load_study
from tests.conftest import run_cli

GREEDY = "p06_greedy_winner"


@pytest.fixture(scope="module")
def p06(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """paper06 as a user leaves it: 12-hour cells imported, g12h frozen (post hoc), applied."""
    from stagewise.create import init_study

    root = tmp_path_factory.mktemp("forger") / "p06"
    init_study(root, "paper06")
    study = load_study(root)
    with Ledger.open(root, create=False) as ledger:
        import_results(study, ledger, [root / "results" / "stage3_12h.csv"])
        freeze(study, ledger, "g12h")
        apply_gate(study, ledger, "g12h")
    return root


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


def _sql(folder: Path, *statements: str) -> None:
    conn = sqlite3.connect(folder / "ledger.sqlite")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in this process (a fresh interpreter per command adds nothing but seconds)."""
    from stagewise.cli.app import main

    old = sys.argv
    sys.argv = ["stagewise", *map(str, argv)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def _refused(result: tuple[int, str, str], *needles: str) -> str:
    code, out, err = result
    assert code == 2, (out, err)
    err = err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- item 2


def test_i2_an_erased_chain_is_refused_by_gate_bundle_run_and_status_says_so(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    shutil.rmtree(study / "decisions")
    _sql(
        study,
        f"UPDATE runs SET val_bpb = val_bpb - 0.05 WHERE condition_id = '{GREEDY}'",
        "DELETE FROM decisions",
        "DELETE FROM events",
    )
    _code, out, _ = _main(["status", study, "--json"], capsys)
    status = json.loads(out)
    assert status["chain_ok"] is False
    assert "event chain is empty" in status["first_broken_link"]
    for args in (
        ["gate", study, "g12h"],
        ["bundle", study, "--out", tmp_path / "b"],
        ["run", study, "stage3"],
    ):
        _refused(_main(args, capsys), "integrity check failed")


def test_i2_a_chain_cut_short_is_caught_by_the_head_kept_beside_the_ledger(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The decision and its event deleted: the rest of the chain links and every table agrees
    with it, but the head file remembers the longer chain."""
    study = _copy(p06, tmp_path)
    head = json.loads((study / HEAD_FILE).read_text(encoding="utf-8"))
    with Ledger.open(study, create=False) as ledger:
        assert (ledger._last()) == (head["seq"], head["hash"]) and not ledger.integrity_problems()
    _sql(
        study,
        "DELETE FROM decisions WHERE kind = 'computed'",
        "DELETE FROM events WHERE kind = 'decision.computed'",
    )
    with Ledger.open(study, create=False) as ledger:
        problems = ledger.integrity_problems()
    assert problems and f"{HEAD_FILE} records event {head['seq']}" in problems[0], problems
    _refused(_main(["gate", study, "g12h"], capsys), HEAD_FILE)


# --------------------------------------------------------------------------- item 7


def test_i7_a_deleted_ledger_is_never_silently_replaced(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    shutil.rmtree(study / "decisions")
    (study / "ledger.sqlite").unlink()
    (study / "ledger.sqlite.bak").unlink()
    for args in (["freeze", study, "g12h"], ["import", study, study / "results/stage3_12h.csv"]):
        _refused(_main(args, capsys), HEAD_FILE, "--new-ledger")
    assert not (study / "ledger.sqlite").exists()
    # Starting over is explicit and recorded in the new chain.
    code, _out, err = _main(["init", study, "--new-ledger", "disk lost; rerunning"], capsys)
    assert code == 0, err
    with Ledger.open(study, create=False) as ledger:
        events = ledger.events("ledger.new")
        assert len(events) == 1 and events[0].payload["reason"] == "disk lost; rerunning"
        assert events[0].payload["previous_head"]
        assert not ledger.integrity_problems()
    _refused(_main(["init", study, "--new-ledger", " "], capsys), "needs a reason")


def test_i7_dropped_tables_are_refused_and_the_good_backup_kept(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    backup = (study / "ledger.sqlite.bak").read_bytes()
    conn = sqlite3.connect(study / "ledger.sqlite")
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    for name in names:
        if name != "sqlite_sequence":
            conn.execute(f"DROP TABLE {name}")
    conn.commit()
    conn.close()
    for args in (["status", study], ["freeze", study, "g12h"]):
        _refused(_main(args, capsys), "holds no ledger tables")
    assert (study / "ledger.sqlite.bak").read_bytes() == backup
    with sqlite3.connect(study / "ledger.sqlite.bak") as bak:
        assert bak.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 12


def test_i7_deleting_every_row_is_not_intact(p06: Path, tmp_path: Path) -> None:
    study = _copy(p06, tmp_path)
    (study / HEAD_FILE).unlink()  # the forger removes the head file too
    _sql(
        study,
        "DELETE FROM runs",
        "DELETE FROM decisions",
        "DELETE FROM freezes",
        "DELETE FROM events",
    )
    with Ledger.open(study, create=False) as ledger:
        problems = ledger.integrity_problems()
    assert problems and "event chain is empty" in problems[0]


def test_i7_the_backup_follows_each_write_and_never_shrinks(p06: Path, tmp_path: Path) -> None:
    from stagewise.create import init_study

    study = tmp_path / "fresh"
    init_study(study, "paper06")
    s = load_study(study)
    with Ledger.open(study, create=False) as ledger:
        import_results(s, ledger, [study / "results" / "stage3_12h.csv"])
        with sqlite3.connect(study / "ledger.sqlite.bak") as bak:
            assert bak.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 12
            assert bak.execute("SELECT MAX(seq) FROM events").fetchone()[0] == ledger._last()[0]
            # One self-contained file: restored by copying it back, no -wal/-shm beside it.
            assert bak.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        ledger.log_event("note", "after a read of the backup", {})
    assert sorted(p.name for p in study.glob("ledger.sqlite.bak*")) == ["ledger.sqlite.bak"]
    # A ledger cut short (events deleted, head file too) never overwrites the longer backup.
    shrunk = _copy(p06, tmp_path, "shrunk")
    before = (shrunk / "ledger.sqlite.bak").read_bytes()
    (shrunk / HEAD_FILE).unlink()
    _sql(shrunk, "DELETE FROM events WHERE seq = (SELECT MAX(seq) FROM events)")
    with Ledger.open(shrunk, create=False) as ledger:
        ledger.log_event("note", "x", {})
    assert (shrunk / "ledger.sqlite.bak").read_bytes() == before


# --------------------------------------------------------------------------- item 8


def test_i8_decisions_and_report_linked_outside_are_refused(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.rmtree(study / "decisions")
    (study / "decisions").symlink_to(outside, target_is_directory=True)
    (study / "report").symlink_to(outside, target_is_directory=True)
    with Ledger.open(study, create=False) as ledger:
        decisions = len(ledger.decisions())
    _refused(_main(["gate", study, "g12h"], capsys), "refusing to write outside")
    _refused(_main(["report", study], capsys), "refusing to write outside")
    assert list(outside.iterdir()) == []
    with Ledger.open(study, create=False) as ledger:
        assert len(ledger.decisions()) == decisions  # nothing recorded either


def test_i8_a_linked_ledger_is_refused(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    elsewhere = tmp_path / "elsewhere.sqlite"
    (study / "ledger.sqlite").rename(elsewhere)
    (study / "ledger.sqlite").symlink_to(elsewhere)
    before = elsewhere.read_bytes()
    for args in (["status", study], ["gate", study, "g12h"]):
        _refused(_main(args, capsys), "is a symbolic link")
    assert elsewhere.read_bytes() == before


def test_i8_a_refused_run_leaves_no_running_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.executors.conftest import fake_study, runs

    study = fake_study(tmp_path / "s", {"c_a": 0})
    outside = tmp_path / "outside"
    outside.mkdir()
    (study / "runs").symlink_to(outside, target_is_directory=True)
    for _ in range(2):  # a retry is refused the same way, and claims nothing
        _refused(
            _main(["run", study, "s1", "--allow-unfrozen"], capsys), "refusing to write outside"
        )
        assert {r["status"] for r in runs(study).values()} <= {"pending"}
        assert all(r["attempts"] == 0 for r in runs(study).values())
    assert list(outside.iterdir()) == []


# --------------------------------------------------------------------------- item 9

CELLS_HEADER = "stage,condition_id,seed,host,status,val_bpb\n"


def test_i9_a_host_block_switched_to_external_after_the_freeze_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.executors.conftest import fake_study

    root = fake_study(tmp_path / "s", {"c_a": 0, "c_b": 0}, gate=True)
    code, _out, err = _main(["freeze", root, "g1"], capsys)
    assert code == 0, err
    toml = (root / "study.toml").read_text(encoding="utf-8")
    switched = toml.replace(
        'executor = "local"\ndevices = ["cpu"]\nworkers = 1', 'executor = "external"'
    )
    assert switched != toml
    (root / "study.toml").write_text(switched, encoding="utf-8")
    made_up = tmp_path / "cells.csv"
    made_up.write_text(
        CELLS_HEADER + "s1,c_a,1,block-a,succeeded,1.0\ns1,c_b,1,block-a,succeeded,0.9\n",
        encoding="utf-8",
    )
    code, _out, err = _main(["import", root, made_up], capsys)
    assert code == 0, err  # the made-up results are recorded ...
    # ... but cannot decide the gate
    _refused(_main(["gate", root, "g1"], capsys), "executors.block-a", "local", "external")
    with Ledger.open(root, create=False) as ledger:
        assert ledger.decisions() == []


def test_i9_an_empty_manual_decision_over_a_frozen_confirm_gate_is_refused(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    kinds = {
        g: s["kind"]
        for g, s in __import__("tomllib")
        .loads((study / "study.toml").read_text(encoding="utf-8"))["gates"]
        .items()
    }
    confirm = next(g for g, k in kinds.items() if k == "confirm")
    _main(["decide", study, confirm, "--withdraw", "--reason", "redo"], capsys)
    _main(["freeze", study, confirm], capsys)
    with Ledger.open(study, create=False) as ledger:
        before = len(ledger.decisions())
    _refused(
        _main(["decide", study, confirm, "--promote", "", "--reason", "none pass"], capsys),
        "names no condition",
        confirm,
    )
    with Ledger.open(study, create=False) as ledger:
        assert len(ledger.decisions()) == before


# --------------------------------------------------------------------------- item 10


def _write_file(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_i10_every_bad_input_is_one_line_and_exit_2(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    toml = (study / "study.toml").read_text(encoding="utf-8")
    header = (study / "results" / "stage3_12h.csv").read_text(encoding="utf-8").splitlines()[0]
    cases: list[tuple[list[object], str, Callable[[], None] | None]] = [
        (
            ["import", study, _write_file(tmp_path / "long.csv", f"{header}\n{'x' * 140_000}\n")],
            "field larger than field limit",
            None,
        ),
        (
            [
                "import",
                study,
                _write_file(tmp_path / "n.json", '[{"val_bpb": ' + "1" * 5000 + "}]"),
            ],
            "number too long",
            None,
        ),
        (["import", study, "/dev/zero"], "not a regular file", None),
    ]
    for argv, needle, _ in cases:
        _refused(_main([str(a) for a in argv], capsys), needle)
    for text, needle in (
        # Deep enough to exhaust any interpreter's recursion limit: at 500 levels whether
        # tomllib recurses out depends on the stack pytest already holds (it parsed on CI).
        (toml + "\n[deep]\nx = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
        (toml + "\n[huge]\nx = " + "9" * 4301 + "\n", "number too long"),
    ):
        (study / "study.toml").write_text(text, encoding="utf-8")
        _refused(_main(["validate", study], capsys), "invalid TOML", needle)
    (study / "study.toml").write_text(toml, encoding="utf-8")
    matrix = study / "matrix.csv"
    lines = matrix.read_text(encoding="utf-8").splitlines()
    matrix.write_text(lines[0] + "\n" + lines[1] + ',"' + "x" * 140_000 + '"\n', encoding="utf-8")
    _refused(_main(["validate", study], capsys), "cannot read the matrix", "field limit")


def test_i10_a_read_only_study_and_a_full_disk_are_one_line(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import pathlib

    study = _copy(p06, tmp_path)

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    with monkeypatch.context() as m:  # what a read-only mount does to every write
        m.setattr(pathlib.Path, "mkdir", refuse)
        _refused(_main(["report", study], capsys), "not writable", "read-only")

    def full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as m:
        m.setattr(sqlite3, "connect", full)
        _refused(_main(["status", study], capsys), "disk full")


def test_i10_a_bundle_killed_midway_leaves_nothing_that_blocks_the_next(
    p06: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import time

    out = tmp_path / "B"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "bundle", str(p06), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".B.partial-*")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(tmp_path.glob(".B.partial-*")), "the bundle is written beside its folder"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # never a half-written bundle under the name asked for
    done = run_cli("bundle", p06, "--out", out)
    assert done.returncode == 0, done.stderr
    assert (out / "MANIFEST.json").is_file() and not list(tmp_path.glob(".B.partial-*"))


# --------------------------------------------------------------------------- item 11


def test_i11_ids_differing_only_in_case_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import MATRIX, STUDY, write_study

    for name, study, matrix, needles in (
        ("cond", STUDY, MATRIX.replace(",c_b,", ",C_A,"), ("'c_a'", "'C_A'", "only in case")),
        (
            "gate",
            STUDY.replace("[gates.g1]", "[gates.G1]")
            + STUDY[STUDY.index("[gates.g1]") : STUDY.index("[stages.s2]")],
            MATRIX,
            ("[gates.g1]", "G1", "only in case"),
        ),
        (
            "host",
            STUDY.replace(
                'hosts = ["block-a", "block-b"]', 'hosts = ["block-a", "Block-A"]', 1
            ).replace("[hosts.block-b]", "[hosts.Block-A]"),
            MATRIX,
            ("Block-A", "block-a", "only in case"),
        ),
    ):
        root = write_study(tmp_path / name, study, matrix)
        _refused(_main(["validate", root], capsys), *needles)


def test_i11_control_characters_in_labels_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import MATRIX, STUDY, write_study

    osc = "\x1b]0;owned\x07"
    root = write_study(tmp_path / "s", STUDY, MATRIX.replace("b,c_b", f"b{osc}\x1b[31m,c_b"))
    Ledger.open(root).close()
    study = load_study(root)
    label = study.condition("c_b").label
    assert "\x1b" not in label and "\x07" not in label
    assert label == "b\\x1b]0;owned\\x07\\x1b[31m"
    code, out, err = _main(["plan", root], capsys)
    assert code == 0, err
    assert "\x1b" not in out + err and "\x07" not in out + err
