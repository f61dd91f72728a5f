"""Argv building: our runner's options, argv templates with placeholders, no shell, timeouts."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from stagewise.errors import ExecutorError
from stagewise.executors.command import (
    build_argv,
    grace_seconds,
    substitute,
    supports_device_batch,
    timeout_seconds,
)
from stagewise.paths import run_dir, run_out_dir
from stagewise.study import load_study
from tests.conftest import write_study

RUNNER = """
[runner]
device = "cpu"
sequence_len = 128
device_batch_size = 16
data = "data"
compile = false
grace_seconds = 7
"""


def _study(tmp_path: Path, extra: str = RUNNER):
    from tests.conftest import STUDY

    text = STUDY.replace('matrix = "matrix.csv"\n', 'matrix = "matrix.csv"\n' + extra, 1)
    return load_study(write_study(tmp_path / "s", text))


def _opts(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(4, len(argv) - 1) if argv[i].startswith("--")}


def test_default_argv_is_our_runner_with_matrix_stage_and_runner_defaults(tmp_path: Path) -> None:
    study = _study(tmp_path)
    cond = study.condition("c_b")
    out = tmp_path / "out dir"
    argv = build_argv(study, cond, study.stages["s1"], 2, study.hosts["block-a"], out)
    assert argv[:4] == [sys.executable, "-m", "stagewise", "train"]
    opts = _opts(argv)
    assert opts["--depth"] == "2" and opts["--aspect-ratio"] == "48"
    assert opts["--matrix-lr"] == "0.04" and opts["--total-batch-size"] == "4096"
    assert opts["--time-budget"] == "4" and opts["--seed"] == "2"
    assert opts["--condition-id"] == "c_b"
    assert opts["--out"] == str(out)  # a path with a space stays one argument
    assert opts["--sequence-len"] == "128" and opts["--device-batch-size"] == "16"
    assert opts["--data"] == str((study.root / "data").resolve())
    assert "--no-compile" in argv
    assert "--grace-seconds" not in argv  # an executor setting, not a runner option


def test_overrides_win_over_matrix_and_runner(tmp_path: Path) -> None:
    study = _study(tmp_path)
    cond = study.condition("c_a")
    argv = build_argv(
        study,
        cond,
        study.stages["s1"],
        1,
        study.hosts["block-a"],
        tmp_path,
        {"device_batch_size": 8},
    )
    assert _opts(argv)["--device-batch-size"] == "8"


def test_template_substitutes_each_element_without_a_shell(tmp_path: Path) -> None:
    study = _study(tmp_path)
    template = (
        "python",
        "train.py",
        "--lr={matrix_lr}",
        "--budget",
        "{time_budget}",
        "--tag",
        "{condition_id} {seed}; rm -rf /",
        "{{literal}}",
        "{host}/{stage}",
    )
    study = replace(study, command=template)
    argv = build_argv(
        study, study.condition("c_a"), study.stages["s1"], 7, study.hosts["block-b"], tmp_path
    )
    assert argv == [
        "python",
        "train.py",
        "--lr=0.04",
        "--budget",
        "4",
        "--tag",
        "c_a 7; rm -rf /",
        "{literal}",
        "block-b/s1",
    ]
    assert supports_device_batch(study, study.hosts["block-a"]) is False


def test_host_template_overrides_the_study_template(tmp_path: Path) -> None:
    study = _study(tmp_path)
    study = replace(study, command=("study-cmd",))
    hosts = dict(study.hosts)
    hosts["block-b"] = replace(hosts["block-b"], command=("host-cmd", "{device_batch_size}"))
    study = replace(study, hosts=hosts)
    cond, stage = study.condition("c_a"), study.stages["s1"]
    assert build_argv(study, cond, stage, 1, study.hosts["block-a"], tmp_path) == ["study-cmd"]
    assert build_argv(study, cond, stage, 1, study.hosts["block-b"], tmp_path) == ["host-cmd", "16"]
    assert supports_device_batch(study, study.hosts["block-b"]) is True


def test_unknown_placeholder_and_stray_brace_are_refused() -> None:
    with pytest.raises(ExecutorError, match=r"unknown placeholder \{lr\}.*known: a, seed"):
        substitute(["--lr", "{lr}"], {"a": "1", "seed": "2"})
    with pytest.raises(ExecutorError, match="unbalanced brace"):
        substitute(["{seed"], {"seed": "1"})


def test_timeout_is_budget_plus_grace(tmp_path: Path) -> None:
    study = _study(tmp_path)
    assert grace_seconds(study, 4) == 7
    assert timeout_seconds(study, 4) == 11
    plain = _study(tmp_path / "p", extra="")
    assert grace_seconds(plain, 10) == 60 + 120  # max(60 s, 50%) + start-up allowance
    assert grace_seconds(plain, 3600) == 1800 + 120


def test_run_dir_layout(tmp_path: Path) -> None:
    study = _study(tmp_path)
    assert (
        run_dir(study.root, "s1", "c_a", 3, "block-a") == study.root / "runs/s1/c_a/seed3-block-a"
    )
    assert (
        run_out_dir(study.root, "s1", "c_a", 3, "block-a")
        == study.root / "runs/s1/c_a/seed3-block-a/out"
    )
