"""Budgets in tokens or optimizer steps: parsing, the study, argv/env, schedules, a real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.budget_units import Budget, format_budget, parse_budget
from stagewise.errors import RunnerError, StudyError
from stagewise.executors.command import build_argv, run_env, timeout_seconds
from stagewise.ledger import Ledger
from stagewise.runner.config import TrainConfig, config_sha256, parse_count
from stagewise.runner.loop import budget_progress, lr_multiplier, weight_decay
from stagewise.study import load_study
from tests.conftest import TINY_RUNNER, run_cli, write_study
from tests.executors.conftest import sample_data  # noqa: F401  (the session fixture)
from tests.walk.conftest import run_rows


@pytest.mark.parametrize(
    ("text", "unit", "amount", "shown"),
    [
        ("50Mtok", "tokens", 50e6, "50Mtok"),
        ("32Ktok", "tokens", 32_000, "32Ktok"),
        ("1.5Btok", "tokens", 1.5e9, "1.5Btok"),
        ("1234tok", "tokens", 1234, "1.234Ktok"),
        ("2000steps", "steps", 2000, "2000steps"),
        ("2Ksteps", "steps", 2000, "2000steps"),
        ("10m", "seconds", 600, "10m"),
        (90, "seconds", 90, "90s"),
    ],
)
def test_parse_budget(text: object, unit: str, amount: float, shown: str) -> None:
    budget = parse_budget(text)
    assert budget == Budget(unit, amount)  # type: ignore[arg-type]
    assert format_budget(budget) == shown
    assert parse_budget(shown) == budget


@pytest.mark.parametrize("text", ["0tok", "1.5tok", "10Mtokens", "5Gtok", "-3steps", "tok", ""])
def test_parse_budget_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="but got"):
        parse_budget(text)


def test_parse_count_for_the_runner() -> None:
    assert parse_count("--token-budget", "50M") == 50_000_000
    assert parse_count("--token-budget", "32000") == 32_000
    assert parse_count("--step-budget", None) is None
    with pytest.raises(RunnerError, match="--step-budget expects a whole number"):
        parse_count("--step-budget", "ten")


def test_schedules_follow_tokens_not_time() -> None:
    cfg = TrainConfig(
        total_batch_size=4096,
        device_batch_size=16,
        sequence_len=128,
        eval_tokens=4096,
        token_budget=40_960,
        warmdown_ratio=0.5,
    )
    assert cfg.target_steps == 10
    for step in range(11):
        # The wall clock must not matter: a slow and a fast host get the same schedule.
        slow, fast = budget_progress(cfg, step, 1e6), budget_progress(cfg, step, 0.0)
        assert slow == fast == min(step * 4096 / 40_960, 1.0)
    half = budget_progress(cfg, 5, 123.0)
    assert half == 0.5
    assert lr_multiplier(half, cfg) == 1.0  # warmdown starts at 1 - 0.5
    assert lr_multiplier(budget_progress(cfg, 8, 0.0), cfg) == pytest.approx(0.4)
    assert weight_decay(budget_progress(cfg, 8, 0.0), cfg) == pytest.approx(0.2 * 0.2)
    # A token target that is not a whole number of steps rounds up: within one step of it.
    odd = cfg.replace(token_budget=41_000)
    assert odd.target_steps == 11 and 0 <= 11 * 4096 - 41_000 < 4096


def test_schedules_follow_steps_and_time() -> None:
    steps = TrainConfig(step_budget=200)
    assert steps.target_steps == 200 and budget_progress(steps, 50, 1e6) == 0.25
    timed = TrainConfig(time_budget=100.0)
    assert timed.target_steps is None and budget_progress(timed, 50, 25.0) == 0.25
    with pytest.raises(RunnerError, match="not both"):
        TrainConfig(step_budget=2, token_budget=3)
    with pytest.raises(RunnerError, match="token_budget must be a positive integer"):
        TrainConfig(token_budget=0)


def test_recipe_hash_unchanged_without_a_count_budget() -> None:
    data = TrainConfig().to_dict()
    data.pop("token_budget")
    data.pop("step_budget")
    assert config_sha256(TrainConfig()) == config_sha256(data)
    assert config_sha256(TrainConfig(token_budget=5)) != config_sha256(TrainConfig())


STUDY = """\
[study]
name = "tok"
reference = "c_a"
matrix = "matrix.csv"
[runner]
grace_seconds = 5
[hosts.h]
executor = "local"
[stages.s1]
budget = "32Ktok"
seeds = [1]
hosts = ["h"]
candidates = "all"
[stages.s2]
budget = "300steps"
seeds = [1]
hosts = ["h"]
candidates = "all"
[gates.g]
kind = "promote"
stages = ["s1"]
rules = [{ rule = "best_k", k = 1 }]
"""
MATRIX = "label,condition_id,role,depth\na,c_a,reference,2\nb,c_b,variant,2\n"


def test_study_argv_and_env_carry_the_budget_in_its_unit(tmp_path: Path) -> None:
    study = load_study(write_study(tmp_path / "s", study=STUDY, matrix=MATRIX))
    s1, s2 = study.stages["s1"], study.stages["s2"]
    assert s1.budget == Budget("tokens", 32_000) and s1.budget_seconds == 0
    assert s2.budget == Budget("steps", 300)
    host, cond = study.hosts["h"], study.condition("c_a")
    argv = build_argv(study, cond, s1, 1, host, tmp_path / "out")
    assert argv[argv.index("--token-budget") + 1] == "32000" and "--time-budget" not in argv
    argv = build_argv(study, cond, s2, 1, host, tmp_path / "out")
    assert argv[argv.index("--step-budget") + 1] == "300"
    env = run_env(study, s1, cond, 1, host, tmp_path / "out")
    assert env["STAGEWISE_TOKEN_BUDGET"] == "32000" and "STAGEWISE_BUDGET_SECONDS" not in env
    assert timeout_seconds(study, s1.budget_seconds) == 86400.0  # no wall clock to add grace to
    Ledger.open(study.root).close()
    plan = run_cli("plan", study.root, "--json")
    assert plan.returncode == 0, plan.stderr
    stages = {s["stage"]: s for s in json.loads(plan.stdout)["stages"]}
    assert stages["s1"]["budget"] == "32Ktok" and stages["s2"]["budget"] == "300steps"


def test_pooled_stages_need_one_budget_unit(tmp_path: Path) -> None:
    text = STUDY.replace('stages = ["s1"]', 'stages = ["s1", "s2"]')
    with pytest.raises(StudyError, match="must share one budget, but got s1=32Ktok, s2=300steps"):
        load_study(write_study(tmp_path / "s", study=text, matrix=MATRIX))


TOKEN_STUDY = (
    """\
[study]
name = "tokens"
reference = "c_a"
matrix = "matrix.csv"
"""
    + TINY_RUNNER
    + """\
[hosts.block-a]
executor = "local"
devices = ["cpu"]
workers = 1
[stages.s1]
budget = "18Ktok"
seeds = [1]
hosts = ["block-a"]
candidates = "all"
[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [{ rule = "best_k", k = 1 }]
"""
)
TOKEN_MATRIX = (
    "label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size\n"
    "a,c_a,reference,1,64,0.04,4096\n"
)


def test_token_budget_stage_with_the_real_runner(tmp_path: Path, sample_data: Path) -> None:  # noqa: F811
    folder = write_study(
        tmp_path / "s", study=TOKEN_STUDY.replace("{data}", str(sample_data)), matrix=TOKEN_MATRIX
    )
    Ledger.open(folder).close()
    proc = run_cli("run", folder, "--freeze")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = run_rows(folder)
    assert len(rows) == 1
    for row in rows:
        assert row["status"] == "succeeded", row["log_tail"]
        # 18,000 tokens at 4,096 a step: 5 steps, 20,480 tokens, within one step of the target.
        assert row["num_steps"] == 5
        assert 0 <= row["total_tokens_M"] * 1e6 - 18_000 < 4096
        summary = json.loads(row["summary_json"])
        assert summary["training_seconds"] >= 0 and summary["total_tokens_M"] == pytest.approx(
            0.02048
        )
        assert "budget=18000 tokens" in Path(row["log_path"]).read_text()


def test_gpu_hours_of_a_token_stage_are_recorded_not_budgeted(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from stagewise.analysis.budget import counterfactual, stage_budget

    runs = [
        SimpleNamespace(stage="s1", status="succeeded", training_seconds=1800.0),
        SimpleNamespace(stage="s1", status="succeeded", training_seconds=1800.0),
    ]
    sb = stage_budget("s1", 2, 1, 1, 0.0, runs)  # type: ignore[arg-type]
    assert sb.budgeted_gpu_hours is None and sb.recorded_gpu_hours == 1.0
    assert counterfactual("g", "all", 2, [sb], 1.0).confirmation_gpu_hours is None
    timed = stage_budget("s1", 2, 1, 1, 3600.0, runs)  # type: ignore[arg-type]
    assert timed.budgeted_gpu_hours == 2.0

    folder = write_study(tmp_path / "s", study=STUDY, matrix=MATRIX)
    Ledger.open(folder).close()
    plan = run_cli("plan", folder, "--json")
    assert plan.returncode == 0, plan.stderr
    s1 = next(s for s in json.loads(plan.stdout)["stages"] if s["stage"] == "s1")
    # Nothing recorded yet: no throughput to estimate from, so the hours are unknown.
    assert s1["budgeted_gpu_hours"] is None and s1["estimated_gpu_hours"] is None
    assert (s1["budget_unit"], s1["budget_amount"]) == ("tokens", 32000)
    assert json.loads(plan.stdout)["total_budgeted_gpu_hours"] == "unknown"
    table = run_cli("plan", folder)
    assert "unknown" in table.stdout
    # Once runs are recorded, their throughput gives an estimate, stated as one.
    results = tmp_path / "r.csv"
    results.write_text(
        "stage,condition_id,seed,host,val_bpb,training_seconds,total_tokens_M,num_steps\n"
        "s1,c_a,1,h,1.5,36,0.032,8\ns1,c_b,1,h,1.4,36,0.032,8\n"
    )
    run_cli("import", folder, results, check=True)
    plan = run_cli("plan", folder, "--json")
    stages = {s["stage"]: s for s in json.loads(plan.stdout)["stages"]}
    # 72 s for 64,000 tokens and 16 steps: s1 is 2 x 32,000 tokens, s2 is 2 x 300 steps.
    assert stages["s1"]["estimated_gpu_hours"] == pytest.approx(2 * 32_000 * 72 / 64_000 / 3600)
    assert stages["s2"]["estimated_gpu_hours"] == pytest.approx(2 * 300 * 72 / 16 / 3600)
    assert "(estimate)" in run_cli("plan", folder).stdout
