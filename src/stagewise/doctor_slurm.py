"""`stagewise doctor --host BLOCK` on a Slurm host block: one short smoke job, end to end.

Before a study sends hundreds of runs to a partition, one tiny job with the block's own settings
answers what a user needs to know: does Slurm accept the settings (`sbatch --test-only`), how
long did the job wait in the queue, which node ran it, which device does the runner see there
(GPU model or CPU), and can the node see the study folder (the shared-filesystem requirement:
the job reads a token the driver wrote into the study just before submitting). Every wait is
bounded by `timeout`; a job still queued at the end is cancelled and reported, not waited for.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from stagewise.doctor import Check, Report, _attempt
from stagewise.errors import ExecutorError
from stagewise.study.model import Study
from stagewise.study.slurm_options import SlurmOptions

SMOKE_MINUTES = 5  # the smoke job's --time: imports torch and looks at the device, nothing more
POLL_SECONDS = 1.0


def probe(token_file: str, token: str) -> dict[str, Any]:
    """Runs inside the smoke job: where it ran, what the runner would train on, the token."""
    started = time.time()
    try:
        seen = Path(token_file).read_text().strip()
    except OSError as exc:
        seen = f"unreadable: {exc.strerror or exc}"
    info: dict[str, Any] = {
        "started": started,
        "node": socket.gethostname().split(".")[0],
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "study_visible": seen == token,
        "token_seen": seen if seen != token else "ok",
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["device"] = f"cuda: {torch.cuda.get_device_name(0)}"
            info["gpus"] = torch.cuda.device_count()
        else:
            info["device"] = "cpu (no CUDA device visible)"
            info["gpus"] = 0
        info["torch"] = torch.__version__
    except Exception as exc:  # the report says what failed on the node
        info["device"] = f"torch failed: {type(exc).__name__}: {exc}"
    return info


def slurm_doctor(study: Study, host_name: str, *, timeout: float = 600.0) -> Report:
    """The checks of one Slurm host block, with the smoke job's facts in `report.smoke`."""
    report = Report()
    host = study.hosts.get(host_name)
    if host is None:
        raise ExecutorError(
            f"{study.study_file}: no host {host_name!r}; hosts: {', '.join(study.hosts)}"
        )
    if host.executor != "slurm":
        raise ExecutorError(
            f"hosts.{host_name} has executor = {host.executor!r}; `doctor --host` submits a "
            'smoke job to a Slurm host block (executor = "slurm")'
        )
    try:
        from stagewise.executors.slurm import check_slurm, submitit, test_submission
    except ExecutorError as exc:
        report.checks.append(Check("slurm", "FAIL", str(exc), 'pip install "stagewise[slurm]"'))
        return report
    options = host.slurm or SlurmOptions()

    def commands() -> str:
        check_slurm()
        return "sbatch, squeue, scontrol and scancel found"

    def settings() -> str:
        test_submission(host, options)
        return "Slurm accepts the host block's settings"

    check = _attempt(
        "slurm commands", "run this on a machine that can submit jobs (a login node)", commands
    )
    report.checks.append(check)
    if check.status == "FAIL":
        return report
    check = _attempt("sbatch settings", f"fix [hosts.{host_name}] in study.toml", settings)
    report.checks.append(check)
    if check.status == "FAIL":
        return report
    report.checks.append(_smoke(study, host_name, options, submitit, report, timeout))
    return report


def _smoke(
    study: Study,
    host_name: str,
    options: SlurmOptions,
    submitit: Any,
    report: Report,
    timeout: float,
) -> Check:
    from stagewise.executors.slurm_support import scontrol_show, squeue, submitit_parameters

    folder = study.root / "slurm" / "doctor" / host_name
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    token_file = folder / "token.txt"
    token_file.write_text(token + "\n")
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    params = submitit_parameters(options, SMOKE_MINUTES, f"sw-doctor-{host_name}")
    executor.update_parameters(**params)
    submitted = time.time()
    try:
        job = executor.submit(probe, str(token_file), token)
    except Exception as exc:
        return Check("smoke job", "FAIL", " ".join(str(exc).split())[:300], "see sbatch's words")
    deadline = time.monotonic() + timeout
    state = "SUBMITTED"
    while time.monotonic() < deadline:
        if job.paths.result_pickle.exists():
            break
        view = (squeue([job.job_id]) or {}).get(job.job_id)
        if view is None:
            gone = scontrol_show(job.job_id)
            state = gone.state if gone is not None else "LEFT_QUEUE"
            time.sleep(2 * POLL_SECONDS)  # the result file may lag on a shared filesystem
            if job.paths.result_pickle.exists():
                break
            return Check(
                "smoke job",
                "FAIL",
                f"job {job.job_id} ended {state} without a result; job log {job.paths.stdout}",
                "read the job log; is the study folder on a filesystem the nodes share?",
            )
        state = view.state
        time.sleep(POLL_SECONDS)
    else:
        subprocess.run(["scancel", job.job_id], capture_output=True, timeout=30)
        return Check(
            "smoke job",
            "FAIL",
            f"job {job.job_id} still {state} after {timeout:.0f}s; cancelled",
            "the queue is busy: try again later, or another partition / qos",
        )
    kind, value = submitit.core.utils.pickle_load(job.paths.result_pickle)
    if kind != "success":
        last = [line for line in str(value).splitlines() if line.strip()][-1:]
        return Check(
            "smoke job",
            "FAIL",
            f"job {job.job_id} failed: {last[0] if last else value}",
            f"read {job.paths.stdout}",
        )
    info = dict(value)
    info["job_id"] = job.job_id
    info["queue_wait_seconds"] = round(max(0.0, float(info.pop("started")) - submitted), 1)
    info["job_log"] = str(job.paths.stdout)
    report.smoke = info
    detail = (
        f"job {job.job_id} waited {info['queue_wait_seconds']:.1f}s in the queue, ran on "
        f"{info['node']} ({info.get('cpus')} CPUs); device {info.get('device')}"
    )
    if not info["study_visible"]:
        return Check(
            "smoke job",
            "FAIL",
            detail + f"; the node cannot read the study folder ({info['token_seen']})",
            "put the study on a filesystem the compute nodes share (same path on every node)",
        )
    return Check("smoke job", "PASS", detail + "; the node sees the study folder")


__all__ = ["probe", "slurm_doctor"]
