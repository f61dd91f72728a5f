"""Which cluster job carries each run, and what the scheduler says of it now (`stagewise status`).

The ledger records every job id at submission and the last state the driver saw. While a job
is still open, its state is read live from `squeue` (one bounded call for all of them), so a
study whose driver is not running still shows PENDING / RUNNING truthfully; a job that left the
queue shows the state recorded when its run ended (TIMEOUT, CANCELLED, ...).
"""

from __future__ import annotations

import shutil
from typing import Any

from stagewise.executors.slurm_support import squeue
from stagewise.ledger import Ledger

LIVE_QUERY_SECONDS = 5.0  # `stagewise status` must answer even when slurmctld does not


def job_rows(ledger: Ledger) -> list[dict[str, Any]]:
    """One row per run that has a job: the newest job of its latest attempt."""
    latest = ledger.latest_jobs()
    open_ids = [j.job_id for j in latest.values() if not j.ended and j.executor == "slurm"]
    live = squeue(open_ids, LIVE_QUERY_SECONDS) if open_ids and shutil.which("squeue") else None
    rows = []
    for key, job in sorted(latest.items(), key=lambda kv: str(kv[0])):
        view = live.get(job.job_id) if live is not None and not job.ended else None
        state, reason, node, source = job.state, job.reason, job.node, "ledger"
        if view is not None:
            state, reason, node, source = view.state, view.reason, view.node or node, "squeue"
        elif live is not None and not job.ended:
            state, source = "LEFT_QUEUE", "squeue"  # gone: the next `stagewise run` collects it
        rows.append(
            {
                "run": str(key),
                "attempt": job.attempt,
                "executor": job.executor,
                "job_id": job.job_id,
                "job_state": state,
                "reason": reason,
                "node": node,
                "ended": job.ended,
                "state_from": source,
                "job_log": job.log_path,
                "submitted_at": job.submitted_at,
            }
        )
    return rows


__all__ = ["job_rows"]
