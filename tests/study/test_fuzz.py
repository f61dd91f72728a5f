"""Malformed study and result files end in a clean StagewiseError or a valid load, never a crash."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewise.errors import StagewiseError
from stagewise.executors.external import import_results
from stagewise.ledger import Ledger
from stagewise.study import load_study
from tests.conftest import MATRIX, STUDY, write_study

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

toml_scalars = st.one_of(
    st.integers(-5, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(alphabet="abcs_-m0123456789", max_size=8).map(lambda s: f'"{s}"'),
    st.just("[]"),
    st.just('["c_a", "c_b"]'),
    st.just('{ gate = "g1" }'),
    st.just("true"),
    st.just("nan"),
    st.just("inf"),
)


def _mutations(text: str) -> st.SearchStrategy[str]:
    lines = text.splitlines()

    @st.composite
    def mutate(draw: st.DrawFn) -> str:
        out = list(lines)
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(out) - 1))
            action = draw(st.sampled_from(["drop", "value", "dup", "garble"]))
            if action == "drop":
                out.pop(i)
            elif action == "dup":
                out.insert(i, out[i])
            elif action == "value" and "=" in out[i]:
                out[i] = out[i].split("=", 1)[0] + "= " + draw(toml_scalars)
            else:
                out[i] = draw(st.text(max_size=30))
            if not out:
                out = [""]
        return "\n".join(out) + "\n"

    return mutate()


def _check_load(study_text: str, matrix_text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_study(Path(tmp) / "s", study=study_text, matrix=matrix_text)
        try:
            load_study(folder)
        except StagewiseError as exc:
            assert str(exc) and "\n" not in str(exc).strip()


@FUZZ
@given(_mutations(STUDY))
def test_mutated_study_files(text: str) -> None:
    _check_load(text, MATRIX)


@FUZZ
@given(_mutations(MATRIX))
def test_mutated_matrices(text: str) -> None:
    _check_load(STUDY, text)


@FUZZ
@given(st.binary(max_size=200))
def test_binary_garbage_study(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_study(Path(tmp) / "s")
        (folder / "study.toml").write_bytes(data)
        with contextlib.suppress(StagewiseError):
            load_study(folder)


cells = st.one_of(
    st.sampled_from(
        ["s1", "s2", "s9", "c_a", "c_b", "block-a", "block-z", "1", "2", "7", "", "nan", "-1"]
    ),
    st.floats(allow_nan=True).map(str),
    st.text(alphabet=',"\n abc01.', max_size=6),
)
rows = st.lists(st.lists(cells, min_size=3, max_size=7).map(",".join), min_size=0, max_size=6)
headers = st.sampled_from(
    [
        "stage,condition_id,seed,host,val_bpb",
        "stage,condition_id,seed,host,val_bpb,status",
        "stage,condition_id,host,val_bpb",
        "stage,condition_id,seed,host,val_bpb,training_seconds,num_steps",
    ]
)


@FUZZ
@given(headers, rows, st.sampled_from([".csv", ".json", ".log"]))
def test_malformed_results_are_refused_cleanly(header: str, body: list[str], suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_study(Path(tmp) / "s")
        study = load_study(folder)
        Ledger.open(folder).close()
        before = hashlib.sha256((folder / "ledger.sqlite").read_bytes()).hexdigest()
        path = Path(tmp) / f"r{suffix}"
        path.write_text("\n".join([header, *body]) + "\n")
        try:
            with Ledger.open(folder) as ledger:
                import_results(study, ledger, [path])
        except StagewiseError as exc:
            assert "\n" not in str(exc).strip()
            after = hashlib.sha256((folder / "ledger.sqlite").read_bytes()).hexdigest()
            assert after == before
