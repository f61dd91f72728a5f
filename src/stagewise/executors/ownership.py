"""Who drives a study's runs: a driver's identity, whether it is still alive, the run lock.

A run row in the ledger is owned by the driver that claimed it ("<host>:<pid>:<start-token>");
only its owner may close it. The kernel's start time of the process makes the name unique for
good (a pid alone is reused), so a later driver can tell a live owner from a dead one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from stagewise.errors import ExecutorError
from stagewise.study.model import Study

LOCK_FILE = ".stagewise-run.lock"


def _start_token(pid: int) -> str:
    """The kernel's start time of a process: with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "0"


def driver_owner() -> str:
    """ "<hostname>:<pid>:<start-token>" of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_token(os.getpid())}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this machine; None when it lives elsewhere (cannot tell)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return False  # not a driver we know of (e.g. an old or hand-written row)
    host, pid_text, token = parts
    if host != socket.gethostname():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return token == "0" or _start_token(pid) == token


@contextlib.contextmanager
def run_lock(
    study: Study, *, wait: bool = True, notify: Callable[[str], None] | None = None
) -> Iterator[None]:
    """One driver per study at a time; the kernel drops the lock when the driver dies.

    With `wait`, a second driver waits for the first to end (then finds its runs finished and
    runs whatever is left); without, it is refused at once.
    """
    path = study.root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            message = f"another `stagewise run` is active on {study.root}" + (
                f" ({holder})" if holder else ""
            )
            if not wait:
                raise ExecutorError(f"{message}; wait for it or stop it first") from None
            if notify is not None:
                notify(f"{message}; waiting for it to end (Ctrl-C to give up)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, driver_owner().encode(), 0)
        yield
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "driver_owner", "owner_alive", "run_lock"]
