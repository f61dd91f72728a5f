"""The Slurm executor's parts that need no cluster: host keys, job settings, state parsing, and
how a job's end becomes a run's outcome (the retry policy reads its failure kind)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stagewise.errors import StudyError
from stagewise.executors.base import RunOutcome, RunTask
from stagewise.executors.slurm_support import (
    JobView,
    Measured,
    end_outcome,
    expand_array_id,
    job_name,
    outcome_path,
    packs,
    parse_scontrol,
    parse_squeue,
    read_outcome,
    run_seconds,
    shared_folder_problem,
    submitit_parameters,
    time_limit_minutes,
    with_job_state,
    write_outcome,
)
from stagewise.ledger import RunKey
from stagewise.study import load_study
from stagewise.study.slurm_options import SlurmOptions

KEY = RunKey("s1", "c_a", 1, "block-a")


def study_with_host(folder: Path, host_lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "matrix.csv").write_text(
        "label,condition_id,role,depth\na,c_a,reference,2\n", encoding="utf-8"
    )
    (folder / "study.toml").write_text(
        '[study]\nname = "t"\nreference = "c_a"\nmatrix = "matrix.csv"\n'
        f"[hosts.block-a]\n{host_lines}\n"
        '[stages.s1]\nbudget = "60s"\nseeds = [1]\nhosts = ["block-a"]\ncandidates = "all"\n',
        encoding="utf-8",
    )
    return folder


def task(tmp_path: Path, *, budget: float = 60.0, attempt: int = 1) -> RunTask:
    run = tmp_path / "runs" / "s1" / "c_a" / "seed1-block-a"
    return RunTask(
        key=KEY,
        argv=("python", "-c", "pass"),
        env={},
        workdir=str(tmp_path),
        out_dir=str(run / "out"),
        log_path=str(run / "train.log"),
        budget_seconds=budget,
        timeout_seconds=budget + 180,
        attempt=attempt,
    )


# --------------------------------------------------------------------------- host keys
def test_every_slurm_key_is_read_into_typed_options(tmp_path: Path) -> None:
    folder = study_with_host(
        tmp_path / "s",
        'executor = "slurm"\npartition = "gpu-h100"\naccount = "lab"\nqos = "normal"\n'
        'constraint = "h100&ib"\ngpus_per_node = 1\ncpus_per_task = 8\nmem_gb = 64\n'
        'time_limit = "2h"\narray_parallelism = 16\nsetup = ["module load cuda/12.4"]\n'
        'sbatch = { mail-type = "END", exclusive = true }\nruns_per_job = 4\n'
        "queue_wait_minutes = 15",
    )
    host = load_study(folder).hosts["block-a"]
    assert host.executor == "slurm"
    assert host.slurm == SlurmOptions(
        partition="gpu-h100",
        account="lab",
        qos="normal",
        constraint="h100&ib",
        gpus_per_node=1,
        cpus_per_task=8,
        mem_gb=64.0,
        time_limit_minutes=120,
        array_parallelism=16,
        setup=("module load cuda/12.4",),
        sbatch={"mail-type": "END", "exclusive": True},
        runs_per_job=4,
        queue_wait_minutes=15.0,
    )
    assert "partition" not in host.options


@pytest.mark.parametrize(
    ("line", "where", "words"),
    [
        ("cpus_per_task = 0", "hosts.block-a.cpus_per_task", ">= 1"),
        ("runs_per_job = 1.5", "hosts.block-a.runs_per_job", "integer"),
        ('time_limit = "90"', "hosts.block-a.time_limit", "minutes"),
        ("time_limit = 0", "hosts.block-a.time_limit", "at least 1 minute"),
        ('partition = "a b"', "hosts.block-a.partition", "Slurm name"),
        ("mem_gb = -4", "hosts.block-a.mem_gb", ">= 0"),
        ('setup = "module load x"', "hosts.block-a.setup", "list of shell lines"),
        ('setup = ["a\\nb"]', "hosts.block-a.setup", "one non-empty line"),
        ('sbatch = { time = "1:00" }', "hosts.block-a.sbatch.time", "time_limit"),
        ('sbatch = { array = "0-3" }', "hosts.block-a.sbatch.array", "sets --array itself"),
        ('partiton = "x"', "hosts.block-a.partiton", "did you mean 'partition'"),
    ],
)
def test_a_bad_slurm_key_is_refused_naming_it(
    tmp_path: Path, line: str, where: str, words: str
) -> None:
    folder = study_with_host(tmp_path / "s", f'executor = "slurm"\n{line}')
    with pytest.raises(StudyError) as err:
        load_study(folder)
    assert where in str(err.value) and words in str(err.value), str(err.value)


def test_a_slurm_key_on_a_local_host_is_refused(tmp_path: Path) -> None:
    folder = study_with_host(tmp_path / "s", 'executor = "local"\npartition = "gpu"')
    with pytest.raises(StudyError, match=r"hosts.block-a.partition: only a Slurm host block"):
        load_study(folder)


# --------------------------------------------------------------------------- job settings
def test_the_time_limit_is_budget_plus_overhead_plus_a_margin_in_whole_minutes(
    tmp_path: Path,
) -> None:
    t = task(tmp_path, budget=300)
    # 300 s + 180 s unmeasured overhead = 480 s; + max(120 s, 25%) = 600 s -> 10 min
    assert time_limit_minutes([run_seconds(t, None, Measured())], SlurmOptions()) == 10
    measured = Measured(overhead_seconds=30.0)
    # 330 s + 120 s -> 450 s -> 8 min (rounded up)
    assert time_limit_minutes([run_seconds(t, None, measured)], SlurmOptions()) == 8
    # a pack of four runs: their time adds up
    assert time_limit_minutes([run_seconds(t, None, measured)] * 4, SlurmOptions()) == 28
    assert time_limit_minutes([1e6], SlurmOptions(time_limit_minutes=45)) == 45


def test_a_token_budget_uses_the_measured_throughput(tmp_path: Path) -> None:
    from stagewise.budget_units import Budget

    t = task(tmp_path, budget=0)
    tokens = Budget("tokens", 50e6)
    measured = Measured(overhead_seconds=20.0, tokens_per_second=100_000.0)
    assert run_seconds(t, tokens, measured) == pytest.approx(500.0 + 20.0)
    assert run_seconds(t, Budget("steps", 600), Measured(steps_per_second=2.0)) == 300 + 180
    assert run_seconds(t, tokens, Measured()) == t.timeout_seconds  # nothing measured yet


def test_submitit_parameters_carry_every_setting() -> None:
    options = SlurmOptions(
        partition="a100",
        constraint="a100",
        gpus_per_node=1,
        cpus_per_task=8,
        mem_gb=64,
        array_parallelism=4,
        setup=("module load cuda",),
        sbatch={"mail-type": "END"},
    )
    params = submitit_parameters(options, 12, job_name("my study", "s1", "a100"))
    assert params == {
        "job_name": "sw-my_study-s1-a100",
        "time": 12,
        "signal_delay_s": 90,
        "stderr_to_stdout": True,
        "nodes": 1,
        "ntasks_per_node": 1,
        "partition": "a100",
        "constraint": "a100",
        "gpus_per_node": 1,
        "cpus_per_task": 8,
        "mem": 64,
        "array_parallelism": 4,
        "setup": ["module load cuda"],
        "additional_parameters": {"mail-type": "END"},
    }
    assert [len(p) for p in packs([object()] * 7, 3)] == [3, 3, 1]  # type: ignore[list-item]


# --------------------------------------------------------------------------- state
def test_squeue_lines_are_read_with_pending_arrays_expanded() -> None:
    text = "12_0|RUNNING|None|n1\n12_[1-3,5%2]|PENDING|Resources|\n13|PENDING|Priority|\n"
    views = parse_squeue(text)
    assert views["12_0"] == JobView("12_0", "RUNNING", None, "n1")
    assert set(views) == {"12_0", "12_1", "12_2", "12_3", "12_5", "13"}
    assert views["12_5"].reason == "Resources" and views["12_5"].live
    assert expand_array_id("7_4") == ["7_4"]


def test_scontrol_finds_an_array_task_and_its_end() -> None:
    line = (
        "JobId=41 ArrayJobId=40 ArrayTaskId=1 JobName=x JobState=TIMEOUT Reason=TimeLimit "
        "Dependency=(null) Restarts=2 ExitCode=0:15 NodeList=gpu07 BatchHost=gpu07\n"
    )
    view = parse_scontrol("40_1", line)
    assert view == JobView("40_1", "TIMEOUT", "TimeLimit", "gpu07", "0:15", 2)
    assert not view.live
    assert parse_scontrol("40_2", line) is None


# --------------------------------------------------------------------------- outcomes
def test_an_outcome_file_round_trips_and_belongs_to_its_attempt(tmp_path: Path) -> None:
    t = task(tmp_path)
    Path(t.out_dir).mkdir(parents=True)
    outcome = RunOutcome(
        KEY, "succeeded", summary={"val_bpb": 1.25, "num_steps": 10}, attempt=1, worker="w"
    )
    path = write_outcome(t, outcome, "5_0")
    assert path == outcome_path(t) and json.loads(path.read_text())["job"] == "5_0"
    assert read_outcome(t) == outcome
    assert read_outcome(task(tmp_path, attempt=2)) is None  # another attempt's file
    path.write_text("{ cut")
    assert read_outcome(t) is None


@pytest.mark.parametrize(
    ("state", "failure", "words"),
    [
        ("TIMEOUT", "timeout", "time limit"),
        ("OUT_OF_MEMORY", "oom", "out of memory"),
        ("NODE_FAIL", "lost", "node running the job failed"),
        ("PREEMPTED", "lost", "preempted"),
        ("CANCELLED", "killed", "cancelled (scancel)"),
        ("BOOT_FAIL", "lost", "could not boot"),
    ],
)
def test_a_job_that_left_the_queue_ends_its_run_by_slurms_state(
    tmp_path: Path, state: str, failure: str, words: str
) -> None:
    t = task(tmp_path)
    view = JobView("9_2", state, "reason-x", "n3")
    outcome = end_outcome(t, "9_2", view, job_log="/s/slurm/9_2_0_log.out", log_tail="tail")
    assert outcome.status == "failed" and outcome.failure == failure
    assert outcome.cause is not None and outcome.cause.startswith(f"{failure}: ")
    for text in (words, f"Slurm job 9_2 {state} (reason-x) on n3", "/s/slurm/9_2_0_log.out"):
        assert text in outcome.cause
    assert outcome.transient  # every one of these is retried by --retries


def test_our_own_cancel_interrupts_and_a_signal_is_explained_by_the_job(tmp_path: Path) -> None:
    t = task(tmp_path)
    view = JobView("9_2", "CANCELLED", None, "n3")
    mine = end_outcome(t, "9_2", view, job_log=None, log_tail="", cancelled="interrupted by SIGINT")
    assert mine.status == "interrupted" and mine.cause is not None
    assert mine.cause.startswith("interrupted by SIGINT")
    killed = RunOutcome(KEY, "failed", failure="killed", cause="killed: ended by SIGKILL")
    oom = with_job_state(killed, "9_2", JobView("9_2", "OUT_OF_MEMORY"), "/log")
    assert oom.failure == "oom" and oom.cause is not None
    assert oom.cause.endswith("(the run: killed: ended by SIGKILL)")
    plain = with_job_state(killed, "9_2", None, "/log")
    assert plain.failure == "killed" and "Slurm job 9_2 UNKNOWN; job log /log" in (
        plain.cause or ""
    )


def test_a_job_whose_log_could_not_be_opened_names_the_shared_folder(tmp_path: Path) -> None:
    t = task(tmp_path)
    outcome = end_outcome(
        t, "3_0", JobView("3_0", "FAILED"), job_log=str(tmp_path / "nowhere.out"), log_tail=""
    )
    assert outcome.failure == "bad_input" and not outcome.transient
    assert "filesystem shared with the compute nodes" in (outcome.cause or "")


def test_a_study_in_memory_cannot_be_seen_by_other_nodes(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm here")
    assert shared_folder_problem(shm, ["another-node"]) is not None
    assert shared_folder_problem(shm, []) is None  # the nodes are this machine
