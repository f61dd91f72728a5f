"""Checks before a Slurm stage submits anything, and what its host block's past runs measured.

`check_slurm`: Slurm's client commands are on PATH. `test_submission`: `sbatch --test-only`
with the block's settings, so a bad partition, account, QOS or option is refused in Slurm's
own words before any run is claimed. `measured`: the block's finished runs' overhead and
throughput, from which a job's default time limit is derived.
"""

from __future__ import annotations

import shutil
import subprocess
import time

from stagewise.errors import ExecutorError, LedgerError
from stagewise.executors.slurm_support import (
    SLURM_CALL_TIMEOUT,
    Measured,
    partition_shortage,
    submitit_parameters,
)
from stagewise.ledger import Ledger
from stagewise.study.model import Host, Study
from stagewise.study.slurm_options import SlurmOptions

NODES_NOT_READY = "Requested node configuration is not available"
NODE_SETTLE_TRIES = 4  # sbatch --test-only tries while the nodes may still be registering
NODE_SETTLE_SECONDS = 5.0


def check_slurm() -> None:
    """Slurm's client commands must be here: one clear error otherwise."""
    missing = [c for c in ("sbatch", "squeue", "scontrol", "scancel") if shutil.which(c) is None]
    if missing:
        raise ExecutorError(
            f"the slurm executor needs Slurm's commands, but {', '.join(missing)} "
            "is not on PATH; run stagewise on a machine that can submit jobs (a login node)"
        )


def test_submission(host: Host, options: SlurmOptions, timeout: float = SLURM_CALL_TIMEOUT) -> None:
    """`sbatch --test-only` with the host's settings: a bad partition, account, QOS or option
    is refused now, with Slurm's own words, before any run is claimed or submitted."""
    argv = ["sbatch", "--test-only", "--job-name", "stagewise-check"]
    params = submitit_parameters(options, options.time_limit_minutes or 5, "stagewise-check")
    flags = {
        "partition": "--partition",
        "account": "--account",
        "qos": "--qos",
        "constraint": "--constraint",
        "gpus_per_node": "--gpus-per-node",
        "cpus_per_task": "--cpus-per-task",
        "time": "--time",
    }
    for key, flag in flags.items():
        if key in params:
            argv.append(f"{flag}={params[key]}")
    if options.mem_gb is not None:
        argv.append(f"--mem={max(1, int(options.mem_gb * 1024))}M")
    for name, value in options.sbatch.items():
        argv.append(f"--{name}" if value is True else f"--{name}={value}")
    try:
        for attempt in range(NODE_SETTLE_TRIES):
            proc = subprocess.run(
                argv, input="#!/bin/sh\ntrue\n", capture_output=True, text=True, timeout=timeout
            )
            # A controller that just restarted answers this until its nodes register again;
            # a request no node could ever hold says the same, and is refused after the tries.
            if proc.returncode == 0 or NODES_NOT_READY not in proc.stderr:
                break
            if attempt + 1 < NODE_SETTLE_TRIES:
                time.sleep(NODE_SETTLE_SECONDS)
    except subprocess.TimeoutExpired:
        raise ExecutorError(
            f"hosts.{host.name}: Slurm did not answer `sbatch --test-only` in {timeout:.0f}s; "
            "is slurmctld up (`scontrol ping`)?"
        ) from None
    if proc.returncode != 0:
        words = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        short = partition_shortage(options.partition, options.cpus_per_task, options.mem_gb)
        raise ExecutorError(
            f"hosts.{host.name}: Slurm refused the job settings: {words or proc.returncode}"
            + (f"; {short}: lower it, or use a partition with bigger nodes" if short else "")
        )


def measured(study: Study, host: str) -> Measured:
    """The host's finished runs: overhead beyond training time, tokens/s, steps/s (slowest)."""
    try:
        ledger = Ledger.open(study.root, create=False)
    except LedgerError:
        return Measured()
    with ledger:
        records = [r for r in ledger.runs(status="succeeded") if r.host == host]
    overheads, tok, steps = [], [], []
    for r in records:
        if r.training_seconds and r.training_seconds > 0:
            if r.total_seconds:
                overheads.append(max(0.0, r.total_seconds - r.training_seconds))
            if r.total_tokens_M:
                tok.append(r.total_tokens_M * 1e6 / r.training_seconds)
            if r.num_steps:
                steps.append(r.num_steps / r.training_seconds)
    return Measured(
        overhead_seconds=max(overheads) if overheads else None,
        tokens_per_second=min(tok) if tok else None,
        steps_per_second=min(steps) if steps else None,
    )


__all__ = ["check_slurm", "measured", "test_submission"]
