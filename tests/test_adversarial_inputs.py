"""Issue 18, bad input: one test per finding about input (findings 4, 5, 6, 7, 9 and 10).

Each drives the real CLI entry point (in this process: argv, error handling and exit code are
the installed command's) on a study in tmp_path and checks what a user sees: exit 2, one line
naming the file, key or row and the value, and nothing recorded. Every case here was accepted,
hung or crashed with an internal error before the bounds of `stagewise.bounds` and the checks
of `stagewise.study.load` existed. (The ledger, chain, verify and scrubbing findings 1-3 and 8,
and the read-only and full-disk cases, are tested with the ledger and the bundle.)
"""

from __future__ import annotations

import json
import math
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewise import bounds
from stagewise.cli.app import main
from stagewise.errors import ImportRejected
from stagewise.executors.external import validate_rows
from stagewise.ledger import Ledger
from stagewise.study import load_study
from tests.conftest import MATRIX, STUDY, write_study
from tests.executors.conftest import FAKE_COMMAND

HEADER = "stage,condition_id,seed,host,val_bpb"


def invoke(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
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


def refused(
    capsys: pytest.CaptureFixture[str], *args: str | Path, naming: tuple[str, ...] = ()
) -> str:
    """Run a command that must be refused: exit 2, one line, no traceback; the line back."""
    code, out, err = invoke(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, (args, out, err)
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    for word in naming:
        assert word in lines[0], (word, lines[0])
    return lines[0]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """The tiny two-block external study, with its ledger."""
    folder = write_study(tmp_path / "study")
    Ledger.open(folder).close()
    return folder


def ledger_bytes(folder: Path) -> bytes:
    return (folder / "ledger.sqlite").read_bytes()


# ------------------------------------------------- finding 4: numbers at import
BAD_IMPORTS = {
    "huge.csv": f"{HEADER}\ns1,c_a,1,block-a,1.7e308\n",
    "negative.csv": f"{HEADER}\ns1,c_a,1,block-a,-0.5\n",
    "zero.csv": f"{HEADER}\ns1,c_a,1,block-a,0\n",
    "large.csv": f"{HEADER}\ns1,c_a,1,block-a,1e300\n",
    "seconds.csv": f"{HEADER},training_seconds\ns1,c_a,1,block-a,1.0,-5\n",
    "bool.json": json.dumps(
        [{"stage": "s1", "condition_id": "c_a", "seed": 1, "host": "block-a", "val_bpb": True}]
    ),
    "dupkeys.json": '[{"stage": "s1", "condition_id": "c_a", "seed": 1, "host": "block-a", '
    '"val_bpb": 1.0, "val_bpb": 0.5}]',
    "empty.json": "[]",
    "truncated.log": "step 10 loss 3.2\n---\nval_bpb: 0.\n",
}


@pytest.mark.parametrize("name", sorted(BAD_IMPORTS))
def test_finding4_import_bounds_every_number(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    path = tmp_path / name
    path.write_text(BAD_IMPORTS[name], encoding="utf-8")
    before = ledger_bytes(study)
    extra = ["--stage", "s1", "--host", "block-a", "--seed", "1", "--condition-id", "c_a"]
    line = refused(
        capsys, "import", study, path, *(extra if name.endswith(".log") else []), naming=(name,)
    )
    assert ledger_bytes(study) == before, line


def test_finding4_an_empty_json_list_is_refused_like_a_header_only_csv(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "h.csv").write_text(HEADER + "\n")
    (tmp_path / "e.json").write_text("[]")
    csv_line = refused(capsys, "import", study, tmp_path / "h.csv")
    json_line = refused(capsys, "import", study, tmp_path / "e.json")
    assert csv_line.split(": ", 2)[-1] == json_line.split(": ", 2)[-1] == "no result rows"


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=12),
    st.none(),
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(["val_bpb", "training_seconds", "num_steps", "seed"]), value=NUMBERS)
def test_finding4_any_number_is_bounded_or_refused(study: Path, field: str, value: object) -> None:
    """Whatever a JSON row holds, it is recorded within bounds or refused as a whole."""
    row = {"stage": "s1", "condition_id": "c_a", "seed": 1, "host": "block-a", "val_bpb": 1.0}
    row[field] = value
    loaded = load_study(study)
    with Ledger.open(study) as ledger:
        try:
            (clean,) = validate_rows(loaded, ledger, Path("r.json"), [{**row, "_line": 1}])
        except ImportRejected as exc:
            assert field in str(exc)
            return
    got = clean[field]
    if field == "val_bpb":
        assert isinstance(got, float) and 0 < got <= bounds.VAL_BPB_MAX
    elif got is not None:
        assert not isinstance(got, bool) and 0 <= got <= bounds.INT64_MAX
        assert math.isfinite(got)


# ------------------------------------------ finding 5: no parameter that spins


def test_finding5_huge_depth_is_refused_at_load_and_by_params(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = MATRIX.replace("a,c_a,reference,2,32", "a,c_a,reference,1000000000,32")
    folder = write_study(tmp_path / "s", matrix=matrix)
    refused(capsys, "validate", folder, naming=("matrix.csv", "c_a", "depth", "1000000000"))
    refused(capsys, "params", "--depth", "1000000000", "--aspect-ratio", "64", naming=("depth",))
    # Each dimension sane, the product not: no single device holds it.
    refused(capsys, "params", "--depth", "5000", "--aspect-ratio", "4096", naming=("parameters",))


# ------------------------------------------ finding 6: one line, exit 2


def test_finding6_import_beyond_int64_and_deep_json(
    study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = {"stage": "s1", "condition_id": "c_a", "seed": 1, "host": "block-a", "val_bpb": 1.0}
    big = tmp_path / "big.json"
    big.write_text(json.dumps([{**row, "num_steps": 2**64}]))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    bigseed = tmp_path / "seed.json"
    bigseed.write_text(json.dumps([{**row, "seed": 99999999999999999999}]))
    before = ledger_bytes(study)
    refused(capsys, "import", study, big, naming=("num_steps", str(2**64)))
    refused(capsys, "import", study, deep, naming=("deep",))
    refused(capsys, "import", study, bigseed, naming=("seed", "99999999999999999999"))
    assert ledger_bytes(study) == before


def test_finding6_out_of_range_seeds_unknown_gate_and_out_files(
    tmp_path: Path, study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = write_study(
        tmp_path / "big", STUDY.replace("seeds = [1, 2]", "seeds = [99999999999999999999]")
    )
    refused(capsys, "validate", big, naming=("stages.s1.seeds", "99999999999999999999"))
    refused(capsys, "sensitivity", study, "unknown-gate", naming=("unknown-gate", "g1"))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(capsys, "report", study, "--out", a_file, naming=("--out", "a-file"))
    refused(capsys, "bundle", study, "--out", a_file, naming=("--out", "a-file"))
    refused(capsys, "train", "--seed", "100000000000000000000", naming=("--seed",))
    refused(capsys, "train", "--out", a_file, naming=("--out", "a-file"))
    assert a_file.read_text() == "x"


def test_finding6_a_bad_schema_version_is_one_line(
    study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(study / "ledger.sqlite")
    conn.execute("UPDATE meta SET value = 'abc' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    refused(capsys, "status", study, naming=("schema_version", "abc"))


# ------------------------------------- finding 7: a refused run claims nothing


def _fake_study(folder: Path, command: list[str], runner_extra: str = "") -> Path:
    folder.mkdir(parents=True)
    (folder / "matrix.csv").write_text("label,condition_id,role,mode\na,c_a,reference,0\n")
    (folder / "study.toml").write_text(
        f"""[study]
name = "fake"
reference = "c_a"
matrix = "matrix.csv"
[runner]
command = {json.dumps(command)}
{runner_extra}
[hosts.h1]
executor = "local"
[stages.s1]
budget = "1s"
seeds = [1]
candidates = "all"
"""
    )
    Ledger.open(folder).close()
    return folder


@pytest.mark.parametrize(
    ("command", "extra", "naming"),
    [
        (["echo", "{nope}"], "", "{nope}"),
        (["echo", "{"], "", "unbalanced brace"),
        (["echo", "x}"], "", "unbalanced brace"),
        (FAKE_COMMAND, "grace_seconds = -5", "grace_seconds"),
    ],
)
def test_finding7_bad_templates_are_refused_by_validate_and_run_claims_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    extra: str,
    naming: str,
) -> None:
    folder = _fake_study(tmp_path / "s", command, extra)
    before = ledger_bytes(folder)
    refused(capsys, "validate", folder, naming=("study.toml", naming))
    refused(capsys, "run", folder, "s1", naming=(naming,))
    assert ledger_bytes(folder) == before
    conn = sqlite3.connect(folder / "ledger.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    conn.close()


# -------------------------------------------------- finding 9: validation gaps
GAPS = {
    "conditions-empty": (
        ('{ rule = "best_k", k = 1 }', '{ rule = "best_k", k = 1, conditions = [] }'),
        "conditions",
    ),
    "hosts-empty": (
        ('hosts = ["block-a", "block-b"]\ncandidates = "all"', 'hosts = []\ncandidates = "all"'),
        "hosts",
    ),
    "candidates-empty": (('candidates = "all"', "candidates = []"), "candidates"),
    "metric": (('matrix = "matrix.csv"', 'matrix = "matrix.csv"\nmetric = "accuracy"'), "accuracy"),
    "typo": (('budget = "4s"', 'bugdet = "4s"\nbudget = "4s"'), "did you mean 'budget'"),
    "no-kind": (('kind = "promote"\n', ""), "kind"),
    "k-too-big": (('{ rule = "best_k", k = 1 }', '{ rule = "best_k", k = 50 }'), "k"),
    "arabic-digits": (('budget = "4s"', 'budget = "١m"'), "١m"),
    "huge-budget": (('budget = "4s"', "budget = 1.7e308"), "budget"),
    "huge-token-budget": (('budget = "4s"', 'budget = "99999999999999999999Btok"'), "budget"),
    "runner-nested": (
        ('matrix = "matrix.csv"\n', 'matrix = "matrix.csv"\n[runner.sub]\nx = 1\n'),
        "runner.sub",
    ),
    "runner-unknown": (
        ('matrix = "matrix.csv"\n', 'matrix = "matrix.csv"\n[runner]\nmatrix_lrr = 0.1\n'),
        "did you mean 'matrix_lr'",
    ),
    "runner-data": (
        ('matrix = "matrix.csv"\n', 'matrix = "matrix.csv"\n[runner]\ndata = 5\n'),
        "runner.data",
    ),
    "study-typo": (
        ('reference = "c_a"', 'reference = "c_a"\nrefrence = "c_b"'),
        "did you mean 'reference'",
    ),
}


@pytest.mark.parametrize("case", sorted(GAPS))
def test_finding9_validation_gaps_are_closed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    (old, new), naming = GAPS[case]
    assert old in STUDY
    folder = write_study(tmp_path / "s", STUDY.replace(old, new, 1))
    refused(capsys, "validate", folder, naming=("study.toml", naming))


def test_finding9_a_list_as_role_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = write_study(tmp_path / "s", STUDY.replace('"matrix.csv"', '"matrix.toml"'))
    (folder / "matrix.toml").write_text(
        '[[conditions]]\nlabel = "a"\ncondition_id = "c_a"\nrole = "reference"\ndepth = 2\n'
        '[[conditions]]\nlabel = "b"\ncondition_id = "c_b"\nrole = []\ndepth = 2\n'
    )
    refused(capsys, "validate", folder, naming=("matrix.toml", "role"))


# ---------------------------------------------------------- finding 10: smaller


def test_finding10_decide_checks_and_bundle_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paper = tmp_path / "p"
    code, _out, err = invoke(capsys, "init", paper, "--example", "paper06")
    assert code == 0, err
    before = ledger_bytes(paper)
    refused(
        capsys,
        "decide",
        paper,
        "g12h",
        "--promote",
        "p06_control",
        "--reason",
        "r",
        naming=("p06_control", "not a candidate"),
    )
    refused(
        capsys,
        "decide",
        paper,
        "g60",
        "--withdraw",
        "--promote",
        "p06_control",
        "--reason",
        "r",
        naming=("--withdraw", "--promote"),
    )
    assert ledger_bytes(paper) == before
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    refused(capsys, "bundle", paper, "--out", occupied, naming=("--out",))
    assert (occupied / "notes.txt").read_text() == "mine"
    refused(capsys, "train", "--seed", "-1", naming=("--seed", "-1"))
