"""A sample-corpus data folder prepared once per session (small vocab: seconds, not minutes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SMALL_VOCAB = 512


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stagewise.data.prepare import prepare

    out = tmp_path_factory.mktemp("sample-data")
    prepare("sample", out, vocab_size=SMALL_VOCAB)
    return out


def stagewise(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `stagewise ARGS` in a fresh process, as a user or an executor would.

    One torch thread: test runs share the machine with each other and with whatever else runs,
    and oversubscribed OpenMP threads spin instead of working (10x slower steps were seen)."""
    cmd = [sys.executable, "-m", "stagewise", *map(str, args)]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", "STAGEWISE_TORCH_THREADS": "1", **(env or {})},
    )
