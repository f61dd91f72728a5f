from __future__ import annotations

from pathlib import Path

import pytest

from stagewise.errors import StudyError
from stagewise.study import load_study
from tests.conftest import MATRIX, STUDY, write_study


def test_tiny_study_loads(tiny_study: Path) -> None:
    study = load_study(tiny_study)
    assert study.name == "tiny"
    assert study.condition_ids == ("c_a", "c_b", "c_c")
    assert study.stages["s1"].budget_seconds == 4.0
    assert study.stages["s2"].candidates.gate == "g1"
    assert study.conditions[0].params == {
        "depth": 2,
        "aspect_ratio": 32,
        "matrix_lr": 0.04,
        "total_batch_size": 4096,
    }
    assert [g.gate_id for g in study.gates_of_stage("s1")] == ["g1"]


BAD_STUDIES = [
    (STUDY.replace('reference = "c_a"', 'reference = "nope"'), "study.reference"),
    (
        STUDY.replace(
            'hosts = ["block-a", "block-b"]\ncandidates = "all"',
            'hosts = ["block-z"]\ncandidates = "all"',
        ),
        "unknown host 'block-z'",
    ),
    (STUDY.replace('budget = "4s"', 'budget = "four"'), "stages.s1.budget"),
    (STUDY.replace('budget = "4s"', "budget = -3"), "stages.s1.budget"),
    (STUDY.replace("seeds = [1, 2]", "seeds = [1, 1]"), "duplicate seeds"),
    (STUDY.replace("seeds = [1, 2]", 'seeds = ["x"]'), "stages.s1.seeds"),
    (
        STUDY.replace('candidates = "all"', 'candidates = ["c_a", "c_zz"]'),
        "unknown condition_id 'c_zz'",
    ),
    (
        STUDY.replace('candidates = { gate = "g1" }', 'candidates = { gate = "g9" }'),
        "unknown gate 'g9'",
    ),
    (STUDY.replace('stages = ["s1"]', 'stages = ["s1", "s2"]'), "must share one budget"),
    (STUDY.replace('stages = ["s1"]', 'stages = ["s9"]'), "unknown stage 's9'"),
    (
        STUDY.replace('{ rule = "best_k", k = 1 }', '{ rule = "best_q", k = 1 }'),
        "unknown rule 'best_q'",
    ),
    (STUDY.replace('{ rule = "best_k", k = 1 }', '{ rule = "best_k" }'), "rule best_k needs k"),
    (STUDY.replace('{ rule = "best_k", k = 1 }', '{ rule = "best_k", k = "two" }'), "rules[0].k"),
    (
        STUDY.replace('{ rule = "best_k", k = 1 }', '{ rule = "best_k", k = 1, q = 2 }'),
        "not a parameter of best_k",
    ),
    (
        STUDY.replace('roles = ["reference"]', 'roles = ["nobody"]'),
        "no condition has role 'nobody'",
    ),
    (STUDY.replace('kind = "promote"', 'kind = "maybe"'), "gates.g1.kind"),
    (STUDY.replace('executor = "external"', 'executor = "cloud"', 1), "hosts.block-a.executor"),
    (STUDY + '\n[runner]\nsequence_len = "long"\n', "runner.sequence_len"),
    (STUDY.replace("[study]", "[study]\n[study]"), "invalid TOML"),
    (STUDY.replace('[study]\nname = "tiny"\n', "[study]\n"), "study.name"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_STUDIES)
def test_bad_study_names_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    folder = write_study(tmp_path / "s", study=text)
    with pytest.raises(StudyError) as info:
        load_study(folder)
    message = str(info.value)
    assert fragment in message
    assert "study.toml" in message or "matrix.csv" in message


def test_cycle_and_not_upstream(tmp_path: Path) -> None:
    cyc = STUDY.replace('candidates = "all"', 'candidates = { gate = "g1" }')
    folder = write_study(tmp_path / "cyc", study=cyc)
    with pytest.raises(StudyError, match="cycle"):
        load_study(folder)
    # s2 listed before the stage its gate pools: the gate is not upstream of it.
    late = STUDY.replace('stages = ["s1"]', 'stages = ["s3"]') + (
        '\n[stages.s3]\nbudget = "4s"\nseeds = [9]\nhosts = ["block-a"]\ncandidates = "all"\n'
    )
    folder = write_study(tmp_path / "late", study=late)
    with pytest.raises(StudyError, match="not upstream"):
        load_study(folder)


BAD_MATRICES = [
    (MATRIX.replace("label,condition_id,role", "label,cid,role"), "missing column(s) condition_id"),
    (MATRIX + "a2,c_a,variant,2,32,0.04,4096\n", "duplicate condition_id 'c_a'"),
    (MATRIX.replace("0.05,4096", "fast,4096"), "line 4"),
    (MATRIX.replace("c,c_c,variant", ",c_c,variant"), "label is empty"),
    (MATRIX.replace("1,64,0.05,4096", "1,64,0.05,4096,extra"), "more fields than header"),
    ("label,condition_id,role\n", "no conditions"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD_MATRICES)
def test_bad_matrix_names_file_and_row(tmp_path: Path, text: str, fragment: str) -> None:
    folder = write_study(tmp_path / "m", matrix=text)
    with pytest.raises(StudyError) as info:
        load_study(folder)
    assert fragment in str(info.value)
    assert "matrix.csv" in str(info.value)


def test_matrix_in_toml(tmp_path: Path) -> None:
    folder = write_study(
        tmp_path / "t", study=STUDY.replace('matrix = "matrix.csv"', 'matrix = "matrix.toml"')
    )
    (folder / "matrix.toml").write_text(
        '[[conditions]]\ncondition_id = "c_a"\nlabel = "a"\nrole = "reference"\ndepth = 2\n'
        '[[conditions]]\ncondition_id = "c_b"\nlabel = "b"\nrole = "comparator"\ndepth = 3\n'
        '[[conditions]]\ncondition_id = "c_c"\nlabel = "c"\nrole = "variant"\ndepth = 1\n',
        encoding="utf-8",
    )
    assert load_study(folder).condition("c_b").params == {"depth": 3}


def test_missing_folder_and_file(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match="not a study folder"):
        load_study(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="stagewise init"):
        load_study(tmp_path / "empty")
