"""The Ray executor's pure parts, importable (and tested) without Ray installed.

What one run of a host asks Ray for, how many such runs fit a node, and following a run's log
file from the driver (which node it started on, its progress lines, a rerun elsewhere).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stagewise.executors.base import ExecutorEvent, RunStarted, RunTask, fault_retries
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


# The client preface of HTTP/2 and an empty SETTINGS frame: every Ray head endpoint (the GCS
# and the Ray client server) is a gRPC server and answers with a SETTINGS frame of its own.
HTTP2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
BANNER_WAIT_SECONDS = 0.3  # services that speak first (SSH, SMTP, Redis errors) do at once


def greet(endpoint: tuple[str, int], timeout: float) -> str | None:
    """None when `endpoint` answers like a Ray head (HTTP/2, as gRPC servers do); otherwise
    what answered there, in words. Raises OSError when nothing accepts the connection."""
    with socket.create_connection(endpoint, timeout=timeout) as sock:
        sock.settimeout(BANNER_WAIT_SECONDS)
        try:
            banner = sock.recv(256)
        except TimeoutError:
            banner = None
        if banner is not None:  # it spoke first (a gRPC server may send its settings at once)
            return None if _is_settings(banner) else _what_answered(banner)
        sock.settimeout(timeout)
        try:
            sock.sendall(HTTP2_GREETING)
            reply = sock.recv(256)
        except TimeoutError:
            return (
                f"it accepted the connection but did not answer the HTTP/2 greeting a Ray head "
                f"answers, within {timeout:g}s"
            )
        except OSError as exc:
            return f"it dropped the connection ({exc.strerror or exc})"
    return None if _is_settings(reply) else _what_answered(reply)


def _is_settings(data: bytes) -> bool:
    """An HTTP/2 SETTINGS frame (type 4 on stream 0): what an HTTP/2 (gRPC) server sends first."""
    return len(data) >= 9 and data[3] == 4 and data[5:9] == b"\0\0\0\0"


def _what_answered(data: bytes) -> str:
    if not data:
        return "it closed the connection without a word"
    text = data.decode("utf-8", errors="replace").strip().splitlines()
    line = text[0][:80] if text else ""
    if line and all(ch.isprintable() for ch in line):
        web = data[:5] == b"HTTP/" or data.lstrip()[:14].lower() in (b"<!doctype html", b"<html>")
        return f"{'an HTTP/1 web server: ' if web else ''}it answered {line!r}"
    return f"it answered {len(data)} bytes that are not HTTP/2 ({data[:12].hex(' ')} ...)"


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
        events.append(RunStarted(task.key, task.attempt, pending.slot, rerun=pending.starts > 1))
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
    """Ray-level reruns of a run whose node or worker died: the host's fault policy."""
    return fault_retries(host)


def shortage(
    host: Host, need: Mapping[str, float], nodes: list[Mapping[str, float]], address: str
) -> str:
    """Why no live node (with these total resources) fits one run of `host`, naming the
    resource that is short and the `ray start` (or host setting) that would fix it."""
    labels = {k: v for k, v in need.items() if k not in ("CPU", "GPU")}
    carrying = [n for n in nodes if all(float(n.get(k, 0.0)) > 0 for k in labels)]
    flags = []
    if need.get("CPU", 0) > 1:
        flags.append(f"--num-cpus={need['CPU']:g}")
    if need.get("GPU", 0) > 0:
        flags.append(f"--num-gpus={need['GPU']:g}")
    start = f"ray start --address={address} " + " ".join(
        [*flags, f"--resources='{labels_json(host)}'"]
    )
    if not carrying:
        what = describe(labels) if labels else describe(need)
        return (
            f"hosts.{host.name}: no live node of the Ray cluster at {address} offers {what}; "
            f"add one with `{start}`"
        )
    short = {
        k: max(float(n.get(k, 0.0)) for n in carrying)
        for k, v in need.items()
        if max(float(n.get(k, 0.0)) for n in carrying) < v
    }
    if not short:
        return (
            f"hosts.{host.name}: no single live node of the Ray cluster at {address} offers "
            f"{describe(need)} at once; add one with `{start}`"
        )
    offered = ", ".join(f"{k}={v:g}" for k, v in sorted(short.items()))
    asked = ", ".join(f"{k}={need[k]:g}" for k in sorted(short))
    keys = {"CPU": "num_cpus", "GPU": "num_gpus"}
    lower = [f"hosts.{host.name}.{keys.get(k, 'resources')}" for k in sorted(short)]
    return (
        f"hosts.{host.name}: one run asks {asked}, but the live nodes offering "
        f"{describe(labels) if labels else 'it'} have at most {offered}; short: "
        f"{', '.join(sorted(short))}. Lower {', '.join(lower)}, or add a node with `{start}`"
    )


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
    "greet",
    "host_port",
    "labels_json",
    "max_retries",
    "requirements",
    "runs_fitting",
    "shortage",
]
