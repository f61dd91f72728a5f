"""Warm workers: a slot's runs trained in one long-lived process, with nothing leaking between
runs, and every failure taking the worker down so the next run gets a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stagewise.executors.base import ExecutorEvent, RunProgress, RunStarted, RunTask
from stagewise.executors.process import run_task
from stagewise.executors.warm import WarmWorker, can_run_warm, run_warm, warm_env
from stagewise.ledger import RunKey


def _argv(data: Path, out: Path, seed: int, steps: int = 6, *extra: str) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "stagewise",
        "train",
        "--depth",
        "2",
        "--aspect-ratio",
        "32",
        "--total-batch-size",
        "4096",
        "--sequence-len",
        "128",
        "--device-batch-size",
        "16",
        "--eval-tokens",
        "8192",
        "--device",
        "cpu",
        "--data",
        str(data),
        "--deterministic",
        "--steps",
        str(steps),
        "--seed",
        str(seed),
        "--out",
        str(out),
        *extra,
    )


def _task(tmp_path: Path, name: str, argv: tuple[str, ...], timeout: float = 300) -> RunTask:
    folder = tmp_path / name
    return RunTask(
        key=RunKey("s1", name, 1, "h"),
        argv=argv,
        env={"STAGEWISE_TORCH_THREADS": "1"},
        workdir=str(tmp_path),
        out_dir=str(folder / "out"),
        log_path=str(folder / "train.log"),
        budget_seconds=60,
        timeout_seconds=timeout,
    )


@pytest.fixture
def worker() -> Iterator[WarmWorker]:
    w = WarmWorker(sys.executable, warm_env(os.environ, {}), "test/cpu#0")
    yield w
    w.close()


def _checkpoint(path: Path) -> tuple[dict[str, str], dict[str, bytes]]:
    """A checkpoint's metadata and every tensor's bytes."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {
            k: f.get_tensor(k).reshape(-1).view(torch.uint8).numpy().tobytes()
            for k in f.keys()  # noqa: SIM118
        }
    return meta, tensors


def _files(task: RunTask) -> tuple[dict[str, object], str]:
    out = Path(task.out_dir)
    summary = json.loads((out / "summary.json").read_text())
    return summary, (out / "train_loss.csv").read_text()


def test_deterministic_run_is_bit_identical_fresh_and_as_a_warm_workers_second_run(
    tmp_path: Path, sample_data: Path, worker: WarmWorker
) -> None:
    events: list[ExecutorEvent] = []
    # The warm worker first trains another run (other seed, other length), then the one compared.
    first = _task(tmp_path, "warm1", _argv(sample_data, tmp_path / "warm1/out", seed=9, steps=4))
    assert run_warm(first, worker, events.append).status == "succeeded"
    pid = worker.proc.pid if worker.proc else None
    # Both runs write the same out folder (its path is part of the checkpoint's config).
    out = tmp_path / "cmp/out"
    warm = _task(tmp_path, "cmp", _argv(sample_data, out, seed=3))
    outcome = run_warm(warm, worker, events.append)
    assert outcome.status == "succeeded", outcome.cause
    assert worker.proc is not None and worker.proc.pid == pid and worker.runs == 2
    assert "run 2 in it" in Path(warm.log_path).read_text()
    warm_summary, warm_losses = _files(warm)
    (out / "model.safetensors").rename(tmp_path / "warm.safetensors")
    fresh = _task(tmp_path, "cmp", _argv(sample_data, out, seed=3))
    assert run_task(fresh, events.append).status == "succeeded"
    assert "warm worker" not in Path(fresh.log_path).read_text()

    fresh_summary, fresh_losses = _files(fresh)
    assert warm_losses == fresh_losses  # every step's loss, repr-exact
    assert warm_summary["val_bpb"] == fresh_summary["val_bpb"]
    # Every weight bit-identical, the same metadata, and so the same file: the checkpoint's
    # sha256 recorded in both summaries is equal (one metadata key keeps the header's order).
    assert _checkpoint(tmp_path / "warm.safetensors") == _checkpoint(out / "model.safetensors")
    assert warm_summary["checkpoint_sha256"] == fresh_summary["checkpoint_sha256"]
    # The warm run streamed what a fresh one does.
    assert any(isinstance(e, RunStarted) and e.key == warm.key for e in events)
    assert any(isinstance(e, RunProgress) and e.key == warm.key for e in events)
    assert outcome.summary["val_bpb"] == warm_summary["val_bpb"]


def test_a_failed_or_killed_run_takes_the_worker_down(
    tmp_path: Path, sample_data: Path, worker: WarmWorker
) -> None:
    def run(name: str, *extra: str, timeout: float = 300) -> tuple[str, str | None, int | None]:
        argv = _argv(sample_data, tmp_path / name / "out", 1, 3, *extra)
        outcome = run_warm(_task(tmp_path, name, argv, timeout), worker, lambda _e: None)
        return outcome.status, outcome.failure, worker.proc.pid if worker.proc else None

    status, _, pid1 = run("ok1")
    assert status == "succeeded" and pid1 is not None
    # Bad input (exit 2): recorded as in a fresh process, and the worker ends with it.
    assert run("bad", "--depth", "0")[:3] == ("failed", "bad_input", None)
    status, _, pid2 = run("ok2")
    assert status == "succeeded" and pid2 not in (None, pid1)
    # Killed at its timeout: the worker goes with the run.
    assert run("slow", timeout=0.5)[:3] == ("failed", "timeout", None)
    assert not Path(f"/proc/{pid2}").exists() or _zombie(pid2)


def test_a_warm_worker_killed_from_outside_is_a_fault_the_driver_reruns(
    tmp_path: Path, sample_data: Path, worker: WarmWorker
) -> None:
    """SIGKILL of the `stagewise worker` alone (not its driver or slot): the run ends
    `killed`, a fault outside the run, which every executor's driver reruns (max_retries)."""
    import signal
    import threading

    from stagewise.executors.base import FAULTS

    started: list[int] = []

    def emit(event: ExecutorEvent) -> None:
        if isinstance(event, RunProgress) and not started and worker.proc is not None:
            started.append(worker.proc.pid)
            os.kill(worker.proc.pid, signal.SIGKILL)  # mid-training, from outside

    argv = _argv(sample_data, tmp_path / "k" / "out", 1, 1000)
    result = []
    thread = threading.Thread(
        target=lambda: result.append(run_warm(_task(tmp_path, "k", argv), worker, emit))
    )
    thread.start()
    thread.join(300)
    (outcome,) = result
    assert started and outcome.status == "failed" and outcome.failure == "killed"
    assert outcome.failure in FAULTS and outcome.transient
    assert outcome.cause == "killed: ended by SIGKILL, a signal from outside the run"
    assert worker.proc is None  # the slot's next run starts a new worker


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except OSError:
        return True


def test_only_our_runner_runs_warm(tmp_path: Path) -> None:
    ours = _task(tmp_path, "a", (sys.executable, "-m", "stagewise", "train", "--depth", "2"))
    custom = _task(tmp_path, "b", (sys.executable, "my_train.py", "--lr", "0.1"))
    other = _task(tmp_path, "c", (sys.executable, "-m", "stagewise", "params"))
    assert can_run_warm(ours) and not can_run_warm(custom) and not can_run_warm(other)


@pytest.mark.smoke
def test_worker_command_is_hidden_and_ends_on_eof() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stagewise", "worker"],
        input="",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "@@stagewise-worker ready"
    help_text = subprocess.run(
        [sys.executable, "-m", "stagewise", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert " worker " not in help_text


@pytest.mark.smoke
def test_a_bad_argument_sent_to_the_warm_worker_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """What typer reports for a bad option (its own exception classes since typer 0.26, click's
    before) is one `error:` line and exit 2, with whatever typer is installed; no traceback."""
    import typer

    from stagewise.protocol import parse_worker_done, worker_request

    requests = "".join(
        worker_request(args, {}, str(tmp_path)) + "\n"
        for args in (["--depth", "two"], ["--depth", "2"])  # the worker ends after the first
    )
    proc = subprocess.run(
        [sys.executable, "-m", "stagewise", "worker"],
        input=requests,
        capture_output=True,
        text=True,
        timeout=120,
    )
    done = [c for c in map(parse_worker_done, proc.stdout.splitlines()) if c is not None]
    assert done == [2], (proc.stdout, proc.stderr)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, typer.__version__
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), proc.stderr
    assert "--depth" in errors[0], errors[0]


def test_usage_errors_are_told_apart_from_other_exceptions() -> None:
    import typer

    from stagewise.cli.worker_cmd import usage_error

    assert "no good" in (usage_error(typer.BadParameter("no good")) or "")
    assert usage_error(ValueError("boom")) is None
    assert usage_error(typer.Exit(3)) is None  # an exit code, not a usage error


def test_a_sigkilled_driver_takes_its_warm_workers_along_and_resume_finishes(
    tmp_path: Path, sample_data: Path
) -> None:
    """The promise of per-run processes holds for warm workers: no orphan after SIGKILL."""
    from tests.conftest import TINY_RUNNER
    from tests.executors.conftest import run_cli, runs, with_ledger

    study = tmp_path / "s"
    study.mkdir()
    (study / "matrix.csv").write_text(
        "label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size\n"
        "a,c_a,reference,2,32,0.04,4096\nb,c_b,variant,1,64,0.05,4096\n"
    )
    (study / "study.toml").write_text(
        '[study]\nname = "w"\nreference = "c_a"\nmatrix = "matrix.csv"\n'
        + TINY_RUNNER.replace("{data}", str(sample_data))
        + '[hosts.h]\nexecutor = "local"\ndevices = ["cpu"]\nworkers = 1\n'
        '[stages.s1]\nbudget = "3s"\nseeds = [1]\nhosts = ["h"]\ncandidates = "all"\n'
    )
    with_ledger(study)
    driver = subprocess.Popen(
        [sys.executable, "-m", "stagewise", "run", str(study), "s1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logs = study / "runs/s1"
    try:
        deadline = time.monotonic() + 240
        pid = None
        while pid is None and time.monotonic() < deadline:
            for log in logs.glob("*/*/train.log"):
                text = log.read_text(errors="replace")
                if "progress:" in text and "# warm worker pid " in text:
                    pid = int(text.split("# warm worker pid ")[1].split(",")[0])
            time.sleep(0.1)
        assert pid is not None, "no warm worker started training"
    finally:
        driver.kill()
        driver.wait(timeout=10)
    end = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and not _zombie(pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid), "the warm worker outlived its driver"
    proc = run_cli("run", study, "s1", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = runs(study)
    assert {r["status"] for r in table.values()} == {"succeeded"} and len(table) == 2
    assert all(1 <= r["attempts"] <= 2 for r in table.values())
