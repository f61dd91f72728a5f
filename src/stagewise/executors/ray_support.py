"""The Ray executor's pure parts, importable (and tested) without Ray installed.

What one run of a host asks Ray for, how many such runs fit a node, and following a run's log
file from the driver (which node it started on, its progress lines, a rerun elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.errors import ExecutorError
from stagewise.executors.base import ExecutorEvent, RunStarted, RunTask
from stagewise.executors.process import parse_progress
from stagewise.protocol import PROGRESS_PREFIX
from stagewise.study.model import Host

DEFAULT_MAX_RETRIES = 3  # Ray-level reruns of a run whose node or worker process died
LOG_HEADER_BYTES = 4096
START_HINT = (
    "start one with `ray start --head --port=6379` (and join nodes with "
    "`ray start --address=<head>:6379 --resources='{\"<label>\": 1}'`)"
)


def host_port(address: str) -> tuple[str, int] | None:
    text = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]") or "127.0.0.1", int(port)


def requirements(host: Host) -> dict[str, float]:
    """What one run of `host` asks Ray for: its labels, CPUs and GPUs."""
    need = dict(host.resources)
    need["CPU"] = host.num_cpus if host.num_cpus is not None else 1.0
    gpus = host.num_gpus
    if gpus is None:
        gpus = 1.0 if any(d.startswith("cuda") for d in host.devices) else 0.0
    need["GPU"] = gpus
    return {k: v for k, v in need.items() if v > 0}


def runs_fitting(node_resources: Mapping[str, float], need: Mapping[str, float]) -> int:
    """How many runs needing `need` fit at once on a node with these total resources."""
    if not need:
        return int(node_resources.get("CPU", 0)) or 1
    return int(min(float(node_resources.get(k, 0.0)) // v for k, v in need.items()))


@dataclass
class LogTail:
    """Following one run's log file: which file (inode) and how far we have read."""

    path: Path
    inode: int | None = None
    offset: int = 0
    partial: bytes = b""


@dataclass
class RayRun:
    """One submitted run: its task, its Ray object ref, and where its log is read."""

    task: RunTask
    ref: Any
    tail: LogTail
    submitted: float = field(default_factory=time.monotonic)
    starts: int = 0  # log files seen: > 1 means Ray reran it on another node
    slot: str | None = None  # the node it last started on, as its log says


def follow_log(pending: RayRun) -> list[ExecutorEvent]:
    """New RunStarted/RunProgress events from the run's log, when this machine can see it.

    A log whose first line names this attempt is followed from its start; when Ray reruns the
    run on another node the file is replaced (the dead try's log is moved aside), which shows
    as a new inode: a second RunStarted with the new node, and progress from the new file.
    """
    tail = pending.tail
    try:
        stat = tail.path.stat()
    except OSError:
        return []
    events: list[ExecutorEvent] = []
    if stat.st_ino != tail.inode:
        header = _read_header(tail.path)
        task = pending.task
        prefix = f"# {task.key} attempt {task.attempt} on "
        if header is None or not header.startswith(prefix):
            return []  # an earlier attempt's log, or not written yet
        tail.inode, tail.offset, tail.partial = stat.st_ino, 0, b""
        pending.starts += 1
        pending.slot = header[len(prefix) :].strip()
        events.append(RunStarted(task.key, task.attempt, pending.slot))
    if stat.st_size <= tail.offset:
        return events
    try:
        with open(tail.path, "rb") as log:
            log.seek(tail.offset)
            chunk = log.read()
    except OSError:
        return events
    tail.offset += len(chunk)
    lines = (tail.partial + chunk).split(b"\n")
    tail.partial = lines.pop()  # an unfinished last line waits for its end
    for raw in lines:
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(PROGRESS_PREFIX):
            progress = parse_progress(line, pending.task.key)
            if progress is not None:
                events.append(progress)
    return events


def _read_header(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as log:
            first = log.readline(LOG_HEADER_BYTES)
    except OSError:
        return None
    return first if first.endswith("\n") else None


def max_retries(host: Host) -> int:
    value = host.options.get("max_retries", DEFAULT_MAX_RETRIES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ExecutorError(
            f"hosts.{host.name}.max_retries: expected a non-negative integer, but got {value!r}"
        )
    return value


def describe(need: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(need.items())) or "nothing"


def labels_json(host: Host) -> str:
    labels = host.resources or {"<label>": 1}
    return "{" + ", ".join(f'"{k}": {v:g}' for k, v in labels.items()) + "}"


__all__ = [
    "DEFAULT_MAX_RETRIES",
    "START_HINT",
    "LogTail",
    "RayRun",
    "describe",
    "follow_log",
    "host_port",
    "labels_json",
    "max_retries",
    "requirements",
    "runs_fitting",
]
