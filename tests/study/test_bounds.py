"""The bounds a study is checked against stay in step with what they describe."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from stagewise import bounds
from stagewise.cli import runner_cmds
from stagewise.executors.command import EXECUTOR_KEYS, placeholders
from stagewise.model_size import count_params
from stagewise.study import load_study
from stagewise.study.load import TEMPLATE_NAMES
from tests.conftest import write_study


def test_runner_options_are_the_train_options() -> None:
    """A new `stagewise train` option must be known to the study loader (and vice versa)."""
    train_options = set(inspect.signature(runner_cmds.train).parameters)
    assert set(bounds.RUNNER_OPTIONS) == train_options


def test_executor_keys_are_known_to_the_loader() -> None:
    assert set(EXECUTOR_KEYS) <= set(bounds.EXECUTOR_OPTIONS)


def test_template_names_cover_every_placeholder(tmp_path: Path) -> None:
    """Every name `placeholders` offers beyond the runner options is one the loader accepts."""
    study = load_study(write_study(tmp_path / "s"))
    stage = study.stages["s1"]
    values = placeholders(
        study, study.conditions[0], stage, 1, study.hosts["block-a"], tmp_path / "out"
    )
    fixed = set(values) - set(study.runner) - set(study.conditions[0].params)
    assert fixed <= TEMPLATE_NAMES


@pytest.mark.parametrize(("depth", "aspect"), [(1, 32), (4, 64), (8, 64), (12, 96), (30, 128)])
def test_approx_num_params_tracks_the_runner(depth: int, aspect: int) -> None:
    exact = count_params(depth, aspect)["num_params"]
    approx = bounds.approx_num_params(depth, aspect, 128, 8192)
    assert abs(approx - exact) <= 0.01 * exact


def test_model_size_bounds() -> None:
    assert bounds.model_size_problem(8, 64) is None
    assert "depth" in (bounds.model_size_problem(1_000_000_000, 64) or "")
    assert "parameters" in (bounds.model_size_problem(bounds.MAX_DEPTH, 4096) or "")
    assert bounds.model_size_problem(True, 64) is not None  # booleans are not numbers


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (bounds.SEED_MAX, True), (-1, False), (bounds.SEED_MAX + 1, False), (True, False)],
)
def test_seed_bounds(value: object, ok: bool) -> None:
    assert (bounds.seed_problem(value) is None) is ok


def test_eval_batch_must_divide_the_evaluation_rows(tmp_path: Path) -> None:
    """Checked when the study loads, not when each run fails: [runner] and matrix columns."""
    from stagewise.errors import StudyError
    from tests.conftest import MATRIX, STUDY

    runner = "[runner]\nsequence_len = 128\ndevice_batch_size = 16\neval_tokens = 8192\n"
    ok = write_study(tmp_path / "ok", STUDY + runner + "eval_batch_size = 32\n")
    assert load_study(ok).runner["eval_batch_size"] == 32
    bad = write_study(tmp_path / "bad", STUDY + runner + "eval_batch_size = 24\n")
    with pytest.raises(StudyError, match=r"runner\.eval_batch_size: 24 must divide the 64"):
        load_study(bad)
    rows = MATRIX.splitlines()
    column = [rows[0] + ",eval_batch_size"] + [r + ",8" for r in rows[1:-1]] + [rows[-1] + ",5"]
    bad_column = write_study(tmp_path / "col", STUDY + runner, "\n".join(column) + "\n")
    with pytest.raises(StudyError, match=r"condition c_c: eval_batch_size=5 must divide the 64"):
        load_study(bad_column)
