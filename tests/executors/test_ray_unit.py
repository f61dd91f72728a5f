"""The Ray executor's pieces that need no cluster: requirements, fitting, log following, errors.

The pure helpers live in `executors.ray_support` and are tested here without importing Ray
(a subprocess proves they do not need it); only `connect` needs the extra.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

from stagewise.errors import ExecutorError
from stagewise.executors import ray_support as rs
from stagewise.executors.base import RunProgress, RunStarted, RunTask
from stagewise.ledger.records import RunKey
from stagewise.study.model import Host


def test_the_core_never_imports_ray() -> None:
    code = (
        "import sys, stagewise.cli.app, stagewise.executors.stage, stagewise.executors.local\n"
        "import stagewise.executors.ray_support\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_without_ray_the_error_names_the_pip_command() -> None:
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if the extra were not installed\n"
        "from stagewise.errors import ExecutorError\n"
        "from stagewise.executors.base import executor_class\n"
        "try:\n"
        "    executor_class('ray')\n"
        "except ExecutorError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "stagewise[ray]"' in proc.stdout


@pytest.fixture
def rx() -> ModuleType:
    """The Ray executor module, for `connect`: these tests skip without the ray extra."""
    pytest.importorskip("ray")
    return importlib.import_module("stagewise.executors.ray")


def test_the_pure_helpers_import_without_ray() -> None:
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if the extra were not installed\n"
        "import stagewise.executors.ray_support as rs\n"
        "assert rs.requirements is not None and 'ray' not in {m.split('.')[0] for m in sys.modules "
        "if sys.modules[m] is not None}\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _host(**kw: object) -> Host:
    return Host(name="blk", executor="ray", **kw)  # type: ignore[arg-type]


def test_requirements_follow_the_host() -> None:
    assert rs.requirements(_host(resources={"l40s": 1.0})) == {"l40s": 1.0, "CPU": 1.0}
    assert rs.requirements(_host(resources={"a": 1.0}, devices=("cuda",))) == {
        "a": 1.0,
        "CPU": 1.0,
        "GPU": 1.0,
    }
    assert rs.requirements(_host(num_cpus=4.0, num_gpus=2.0)) == {"CPU": 4.0, "GPU": 2.0}
    assert rs.requirements(_host(num_cpus=0.0)) == {}


def test_runs_fitting_a_node_is_bounded_by_every_resource() -> None:
    node = {"CPU": 2.0, "blk-a": 1.0, "blk-b": 1.0, "memory": 1e9}
    assert rs.runs_fitting(node, {"blk-a": 1.0, "CPU": 1.0}) == 1
    assert rs.runs_fitting(node, {"CPU": 1.0}) == 2
    assert rs.runs_fitting(node, {"blk-c": 1.0, "CPU": 1.0}) == 0
    assert rs.runs_fitting(node, {"blk-a": 1.0, "GPU": 1.0}) == 0


def test_a_closed_port_is_one_clear_error_fast(rx: ModuleType) -> None:
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again once we leave the block
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=rf"127\.0\.0\.1:{port}.*ray start --head"):
        rx.connect(f"127.0.0.1:{port}", timeout=2)
    assert time.monotonic() - started < 10


def test_a_bad_address_is_refused(rx: ModuleType) -> None:
    with pytest.raises(ExecutorError, match="not host:port"):
        rx.connect("nowhere", timeout=1)


def test_max_retries_must_be_a_count() -> None:
    with pytest.raises(ExecutorError, match=r"hosts\.blk\.max_retries.*-1"):
        rs.max_retries(_host(options={"max_retries": -1}))
    assert rs.max_retries(_host()) == rs.DEFAULT_MAX_RETRIES


def _task(tmp_path: Path) -> RunTask:
    return RunTask(
        key=RunKey("s1", "c_a", 1, "blk"),
        argv=("python", "-V"),
        env={},
        workdir=str(tmp_path),
        out_dir=str(tmp_path / "out"),
        log_path=str(tmp_path / "train.log"),
        budget_seconds=4,
        timeout_seconds=10,
        attempt=2,
    )


def test_progress_is_read_from_the_log_and_follows_a_rerun_on_another_node(
    tmp_path: Path,
) -> None:
    task = _task(tmp_path)
    run = rs.RayRun(task, None, rs.LogTail(Path(task.log_path)))
    log = Path(task.log_path)
    assert rs.follow_log(run) == []  # not started yet
    log.write_text(f"# {task.key} attempt 1 on ray:1.2.3.4/old\nprogress: step=1 progress=0.5\n")
    assert rs.follow_log(run) == []  # an earlier attempt's log is not this run's
    log.unlink()
    log.write_text(f"# {task.key} attempt 2 on ray:127.0.0.1/node1\nprogress: step=3 prog")
    events = rs.follow_log(run)
    assert events == [RunStarted(task.key, 2, "ray:127.0.0.1/node1")]
    with log.open("a") as f:
        f.write("ress=0.25 loss=4.5 tok_per_s=100 mfu=nan remaining_s=3\nstep noise\n")
    (progress,) = rs.follow_log(run)
    assert isinstance(progress, RunProgress)
    assert (progress.step, progress.progress, progress.loss, progress.mfu) == (3, 0.25, 4.5, None)
    assert rs.follow_log(run) == []
    # Ray reran it elsewhere: the old log is moved aside and a new one starts.
    log.rename(tmp_path / "train.attempt1.log")
    log.write_text(
        f"# {task.key} attempt 2 on ray:127.0.0.1/node2\nprogress: step=1 progress=0.1\n"
    )
    started, again = rs.follow_log(run)
    assert started == RunStarted(task.key, 2, "ray:127.0.0.1/node2", rerun=True)  # Ray reran it
    assert isinstance(again, RunProgress) and again.step == 1
    assert run.starts == 2


# ---------------------------------------------------------------------- resource-short hints
def _blk_host(**kw: object) -> Host:
    return Host(name="blk", executor="ray", resources={"blk-a": 1.0}, **kw)  # type: ignore[arg-type]


def test_a_missing_label_asks_for_a_node_with_it() -> None:
    host = _blk_host()
    text = rs.shortage(host, rs.requirements(host), [{"CPU": 2.0, "blk-b": 1.0}], "h:1")
    assert "no live node" in text and "blk-a=1" in text
    assert "ray start --address=h:1 --resources='{\"blk-a\": 1}'" in text


def test_a_short_cpu_count_is_named_not_the_label() -> None:
    host = _blk_host(num_cpus=4.0)
    nodes = [{"CPU": 1.0, "blk-a": 1.0}, {"CPU": 2.0, "blk-a": 1.0}]
    text = rs.shortage(host, rs.requirements(host), nodes, "h:1")
    assert "asks CPU=4" in text and "at most CPU=2" in text and "short: CPU." in text
    assert "hosts.blk.num_cpus" in text and "--num-cpus=4" in text
    gpu = _blk_host(num_gpus=1.0)
    text = rs.shortage(gpu, rs.requirements(gpu), nodes, "h:1")
    assert "short: GPU." in text and "hosts.blk.num_gpus" in text and "--num-gpus=1" in text


def test_resources_no_single_node_offers_together() -> None:
    host = _blk_host(num_cpus=2.0, num_gpus=1.0)
    nodes = [{"CPU": 2.0, "blk-a": 1.0}, {"CPU": 1.0, "GPU": 1.0, "blk-a": 1.0}]
    text = rs.shortage(host, rs.requirements(host), nodes, "h:1")
    assert "no single live node" in text


# ---------------------------------------------------------------------- what answers there
def _serve(reply: bytes | None, *, first: bool = False) -> tuple[int, threading.Thread]:
    """A one-connection TCP server: says `reply` first (`first`) or after the client spoke;
    None closes at once."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            if reply is None:
                return
            if not first:
                conn.recv(1024)
            conn.sendall(reply)
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(1024)  # until the client closes

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return int(server.getsockname()[1]), thread


@pytest.mark.parametrize(
    ("reply", "first", "expected"),
    [
        (bytes([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]), False, None),  # HTTP/2 SETTINGS
        (bytes([0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]), True, None),  # sent at once
        (b"HTTP/1.0 400 Bad request\r\n\r\n", False, "web server: it answered 'HTTP/1.0 400"),
        (b"<!DOCTYPE HTML>\n<html>", False, "an HTTP/1 web server: it answered '<!DOCTYPE HTML>'"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", True, "it answered 'SSH-2.0-OpenSSH_9.6'"),
        (b"\x15\x03\x01\x00\x02\x02\x32", False, "bytes that are not HTTP/2"),  # a TLS alert
        (None, False, "closed the connection without a word"),
    ],
)
def test_greet_tells_a_ray_head_from_other_services(
    reply: bytes | None, first: bool, expected: str | None
) -> None:
    port, thread = _serve(reply, first=first)
    answered = rs.greet(("127.0.0.1", port), 2.0)
    thread.join(10)
    if expected is None:
        assert answered is None
    else:
        assert answered is not None and expected in answered, answered


def test_greet_bounds_a_silent_service() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    with server:
        answered = rs.greet(("127.0.0.1", server.getsockname()[1]), 0.5)
    assert answered is not None and "did not answer the HTTP/2 greeting" in answered
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(OSError):
        rs.greet(("127.0.0.1", port), 0.5)
