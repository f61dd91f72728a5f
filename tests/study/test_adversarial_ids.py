"""Issue 17: an id that could leave the study folder is refused everywhere and writes nothing.

Ids (study name, stage, gate, condition, host) become parts of paths: freeze and decision
records, run folders, report and bundle files. Hypothesis generates hostile ones (separators,
`..`, absolute paths, NUL, unicode look-alikes, very long names); each is put where a user could
write it, and every command that loads the study is run on it through the real CLI. After each
command: exit 2 with one line, the ledger byte-identical, and no file created or changed
anywhere in the temp folder (the study's parent listing is unchanged).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sqlite3
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stagewise.cli.app import main
from stagewise.errors import ImportRejected, StudyError
from stagewise.executors.external import import_results
from stagewise.gates import records
from stagewise.ledger import Ledger
from stagewise.paths import ID_MAX_LENGTH, id_problem, run_dir, safe_join
from stagewise.report.tables import Table
from stagewise.study import load_study
from tests.executors.conftest import FAKE_COMMAND

# What an adversarial user types; each one is a path trick or a file-system surprise.
NASTY = [
    "../../../gpwn_outside",
    "..",
    ".",
    "x/..",
    "a/b",
    "/tmp/gpwn",
    "/",
    "C:\\gpwn",
    "a\\..\\b",
    "a\x00b",
    "a\nb",
    " lead",
    "-rf",
    ".hidden",
    "a..b",
    "ｇａｔｅ",  # fullwidth look-alikes
    "gаte",  # Cyrillic a
    "café",
    "e\u0301",
    "a b",
    "~",
    "$HOME",
    "x" * (ID_MAX_LENGTH + 1),
    "x" * 5000,
]
SEPARATORS = ["/", "\\", "..", "/../", "\x00", "\u2215", "\u2044", "%2F", " "]
SAFE = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,12}", fullmatch=True)


def unsafe_ids() -> st.SearchStrategy[str]:
    spliced = st.builds(lambda a, sep, b: a + sep + b, SAFE, st.sampled_from(SEPARATORS), SAFE)
    anything = st.text(min_size=0, max_size=80).filter(lambda s: id_problem(s) is not None)
    return st.one_of(st.sampled_from(NASTY), spliced, anything)


POSITIONS = ("study.name", "stage", "gate", "condition", "host")
FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def toml_str(value: str) -> str:
    """A TOML basic string holding exactly `value` (control characters escaped)."""
    out = []
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def study_files(
    name: str = "adv", stage: str = "s1", gate: str = "g1", cond: str = "c_b", host: str = "h1"
) -> tuple[str, str]:
    """study.toml and matrix.csv of a two-condition study run by the fake trainer."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "condition_id", "role", "mode", "sleep"])
    writer.writerow(["a", "c_a", "reference", 0, 0.05])
    writer.writerow(["b", cond, "variant", 0, 0.05])
    study = f"""[study]
name = {toml_str(name)}
reference = "c_a"
matrix = "matrix.csv"
[runner]
command = {json.dumps(FAKE_COMMAND)}
device_batch_size = 16
grace_seconds = 30
[hosts.{toml_str(host)}]
executor = "local"
devices = ["cpu"]
workers = 1
[stages.{toml_str(stage)}]
budget = "1s"
seeds = [1]
hosts = [{toml_str(host)}]
candidates = "all"
[gates.{toml_str(gate)}]
kind = "promote"
stages = [{toml_str(stage)}]
rules = [{{ rule = "best_k", k = 1 }}]
"""
    return study, buf.getvalue()


def write(folder: Path, files: tuple[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(files[0], encoding="utf-8")
    (folder / "matrix.csv").write_text(files[1], encoding="utf-8")
    return folder


def place(position: str, bad: str) -> tuple[str, str]:
    key = {"study.name": "name", "condition": "cond"}.get(position, position)
    return study_files(**{key: bad})


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under root, files with size and mtime: any write anywhere shows up here.

    Folders count by name only: SQLite's -wal/-shm files come and go while a ledger is open."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


# ----------------------------------------------------------------- the rule itself


@given(unsafe_ids())
@example("../../../gpwn_outside")
def test_rule_refuses_every_hostile_id(bad: str) -> None:
    assert id_problem(bad) is not None


@given(SAFE)
def test_rule_accepts_plain_ids(good: str) -> None:
    assert id_problem(good) is None


@FAST
@given(parts=st.lists(st.one_of(unsafe_ids(), SAFE), min_size=1, max_size=4))
def test_safe_join_never_leaves_its_root(tmp_path: Path, parts: list[str]) -> None:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    before = listing(tmp_path)
    try:
        target = safe_join(root, *parts)
    except StudyError as exc:
        assert "\n" not in str(exc).strip() or "\n" in "".join(parts)
    else:
        assert target == root.resolve() or root.resolve() in target.parents
    assert listing(tmp_path) == before  # checking a path never creates it


# ------------------------------------------------------------------ loading refuses


@FAST
@given(position=st.sampled_from(POSITIONS), bad=unsafe_ids())
@example(position="gate", bad="../../../gpwn_outside")
@example(position="condition", bad="/some/dir")
@example(position="host", bad="x/..")
@example(position="study.name", bad=" lead")
@example(position="condition", bad="c_b ")
def test_load_refuses_the_id_naming_file_and_key(position: str, bad: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp) / "study", place(position, bad))
        with pytest.raises(StudyError) as info:
            load_study(folder)
    message = str(info.value)
    where = "matrix.csv" if position == "condition" else "study.toml"
    assert where in message


# ----------------------------------------------- every command, through the real CLI

COMMANDS = [
    ("validate",),
    ("plan",),
    ("status",),
    ("freeze", "GATE"),
    ("decide", "GATE", "--promote", "c_a", "--reason", "r"),
    ("import", "RESULTS"),
    ("run", "STAGE"),
    ("gate", "GATE"),
    ("sensitivity", "GATE"),
    ("report", "--out", "OUT/report"),
    ("bundle", "--out", "OUT/bundle"),
]


# No NUL here: argv cannot carry it (the loader tests above cover it).
CLI_IDS = ["../../../gpwn_outside", "/tmp/gpwn", "x/..", "a\\..\\b", "ｇａｔｅ", "x" * 200, ".."]


def invoke(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """The real CLI entry point in this process (argv, error handling, exit code), which saves
    the interpreter start-up a subprocess would pay on every command."""
    capsys.readouterr()
    argv = sys.argv
    sys.argv = ["stagewise", *map(str, args)]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _fill(command: tuple[str, ...], study: Path, bad: str, out: Path) -> list[str]:
    values = {"GATE": bad, "STAGE": bad, "RESULTS": str(out / "results.csv")}
    args = [values.get(a, a).replace("OUT", str(out)) for a in command]
    return [args[0], str(study), *args[1:]]


def test_every_command_refuses_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each command meets a different hostile id in a different place (the pairing is fixed;
    Hypothesis explores the ids against the loader above)."""
    study = write(tmp_path / "study", study_files())
    Ledger.open(study).close()
    out = tmp_path / "out"
    out.mkdir()
    for i, command in enumerate(COMMANDS):
        position, bad = POSITIONS[i % len(POSITIONS)], CLI_IDS[i % len(CLI_IDS)]
        (out / "results.csv").write_text(
            f"stage,condition_id,seed,host,val_bpb\ns1,c_a,1,h1,1.0\n{bad},c_a,1,h1,1.0\n"
        )
        write(study, place(position, bad))
        ledger = (study / "ledger.sqlite").read_bytes()
        before = listing(tmp_path)
        code, stdout, stderr = invoke(capsys, *_fill(command, study, bad, out))
        assert code == 2, (command, position, bad, stdout, stderr)
        assert "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1, (command, stderr)
        assert (study / "ledger.sqlite").read_bytes() == ledger, command
        assert listing(tmp_path) == before, command


# ---------------------------------------------------------------- imports refuse


@FAST
@given(field=st.sampled_from(["stage", "condition_id", "host"]), bad=unsafe_ids())
def test_import_refuses_hostile_ids_and_records_nothing(
    tmp_path: Path, field: str, bad: str
) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        study_dir = write(Path(tmp) / "study", study_files())
        study = load_study(study_dir)
        row = {"stage": "s1", "condition_id": "c_a", "seed": 1, "host": "h1", "val_bpb": 1.0}
        row[field] = bad
        results = Path(tmp) / "results.json"
        results.write_text(json.dumps([row]), encoding="utf-8")
        Ledger.open(study_dir).close()
        ledger_bytes = (study_dir / "ledger.sqlite").read_bytes()
        before = listing(Path(tmp))
        with Ledger.open(study_dir) as ledger, pytest.raises(ImportRejected) as info:
            import_results(study, ledger, [results])
        assert field in str(info.value)
        assert (study_dir / "ledger.sqlite").read_bytes() == ledger_bytes
        assert listing(Path(tmp)) == before


# ------------------------------------------- defence in depth: past the loader


@pytest.mark.parametrize(
    ("bad", "escapes"),
    [("../../../../../outside", True), ("a/../../../../../../b", True), ("/tmp/abs", False)],
)
def test_paths_built_from_ids_are_checked_even_without_the_loader(
    tmp_path: Path, bad: str, escapes: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Study built in code (not loaded) with a hostile id still cannot write outside: each
    path built from it is refused, or (where a prefix makes it harmless, `seed1-/tmp/abs`)
    lies inside its folder."""
    study_dir = write(tmp_path / "nest" / "study", study_files())
    forged = dataclasses.replace(load_study(study_dir), root=study_dir.resolve())
    decisions = study_dir / "decisions"
    tables = tmp_path / "nest" / "tables"
    decisions.mkdir()
    tables.mkdir()
    before = listing(tmp_path)
    runs = study_dir / "runs"
    refused = 0
    for folder, make in (
        (runs, lambda: [run_dir(forged.root, bad, "c_a", 1, "h1")]),
        (runs, lambda: [run_dir(forged.root, "s1", bad, 1, "h1")]),
        (runs, lambda: [run_dir(forged.root, "s1", "c_a", 1, bad)]),
        (decisions, lambda: records.record_paths(decisions, bad)),
        (tables, lambda: Table(bad, "t", ["a"], []).write(tables)),
    ):
        try:
            paths = make()
        except StudyError:
            refused += 1
            continue
        for path in paths:
            assert folder.resolve() in Path(path).resolve().parents, (bad, path)
    if escapes:
        assert refused == 5
    outside = {
        k: v for k, v in listing(tmp_path).items() if "decisions" not in k and "tables" not in k
    }
    assert outside == {
        k: v for k, v in before.items() if "decisions" not in k and "tables" not in k
    }


# ------------------------------------------------- safe but unusual ids still work


def test_unusual_safe_ids_run_end_to_end_inside_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Dots, dashes, digits first and the longest id: freeze, run, gate, report, bundle."""
    long_id = "c" * ID_MAX_LENGTH
    files = study_files(name="0.adv-1", stage="S.1_a", gate="g.1-x", cond=long_id, host="h.1")
    study = write(tmp_path / "study", files)
    Ledger.open(study).close()
    out = tmp_path / "out"
    for args in (
        ("validate", study),
        ("freeze", study, "g.1-x"),
        ("run", study, "S.1_a"),
        ("gate", study, "g.1-x"),
        ("report", study, "--out", out / "report"),
        ("bundle", study, "--out", out / "bundle"),
        ("verify", out / "bundle"),
    ):
        code, stdout, stderr = invoke(capsys, *args)
        assert code == 0, (args, stdout, stderr)
    top = {p.name for p in tmp_path.iterdir()}
    assert top == {"study", "out"}
    assert (study / "runs" / "S.1_a" / long_id / "seed1-h.1").is_dir()
    assert (study / "decisions" / "g.1-x.json").is_file()
    conn = sqlite3.connect(study / "ledger.sqlite")
    statuses = {r[0] for r in conn.execute("SELECT status FROM runs")}
    conn.close()
    assert statuses == {"succeeded"}


def test_init_makes_a_safe_study_name_from_any_folder_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "My Study (v2)..café"
    code, stdout, stderr = invoke(capsys, "init", folder)
    assert code == 0, (stdout, stderr)
    assert load_study(folder).name == "My-Study-v2-.caf"
    assert {p.name for p in tmp_path.iterdir()} == {folder.name}
