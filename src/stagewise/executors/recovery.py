"""Settling what a lost driver left behind: its `running` rows are put back, adopted or re-attached.

A driver killed mid-stage (SIGKILL, reboot) leaves rows marked `running` under its name. The
next driver, holding the run lock, adopts a run that had finished in the instant before the
driver died (its summary.json is whole) and puts every other one back as `interrupted`, to be
rerun from scratch, so nothing finished is repeated and nothing unfinished is lost.

A run carried by a cluster job (Slurm) did not die with its driver: the ledger holds its job id
(`jobs` table). `reattach_stale` passes such runs of the stage being run to the new driver,
which follows the same jobs (`Executor.reattach`); `recover_stale` leaves those of other
stages alone, for the `stagewise run` of their own stage to re-attach. A Slurm run put back
without a job on record may still have one: the driver can die after sbatch accepted the array
and before the ids reached the ledger. Before such a run is put back, the jobs queued from its
stage's job folder that the ledger does not know are cancelled (and waited for), so the rerun
never runs beside its orphan.
"""

from __future__ import annotations

from typing import Any

from stagewise.errors import ExecutorError
from stagewise.executors.ownership import owner_alive
from stagewise.executors.slurm_support import cancel_jobs, job_folder, unrecorded_jobs
from stagewise.ledger import Ledger, RunKey
from stagewise.ledger.records import JobRecord
from stagewise.paths import run_out_dir
from stagewise.protocol import finished_summary
from stagewise.study.model import Study


def finished_result(study: Study, key: RunKey) -> dict[str, Any] | None:
    """The summary a lost attempt completed before its driver died, if it is whole.

    A run can finish in the instant between its driver's death and the ledger write; its
    summary.json (written atomically by the runner) is then the result, and rerunning it would
    repeat a finished run. Out dirs are emptied at each attempt, so this is the last attempt's.
    """
    return finished_summary(
        run_out_dir(study.root, key.stage, key.condition_id, key.seed, key.host)
    )


# Executors whose runs outlive their driver: a lost driver's runs are followed, not rerun.
REATTACHABLE = frozenset({"slurm"})


def _open_job(ledger: Ledger, study: Study | None, key: RunKey) -> JobRecord | None:
    """The uncollected job carrying the run's current attempt, on a re-attachable host."""
    if study is None or key.host not in study.hosts:
        return None
    if study.hosts[key.host].executor not in REATTACHABLE:
        return None
    record = ledger.run(key)
    return ledger.open_job(key, record.attempts) if record is not None else None


def _gone(owner: str, key: RunKey) -> None:
    """Refuse while the owner may still be alive; return when it is certainly gone."""
    alive = owner_alive(owner)
    if alive:
        raise ExecutorError(
            f"{key} is being run by another live `stagewise run` ({owner}); "
            "wait for it to finish or stop it first"
        )
    if alive is None:
        raise ExecutorError(
            f"{key} is marked running by a driver on another machine ({owner}); run "
            "`stagewise run` there, or stop that driver and rerun here after it is gone"
        )


def reattach_stale(
    ledger: Ledger, me: str, study: Study, stage: str
) -> list[tuple[RunKey, JobRecord]]:
    """Take over the stage's runs that a lost driver left to cluster jobs still on record."""
    taken = []
    for key, owner in sorted(ledger.running_owners().items()):
        if owner == me or key.stage != stage:
            continue
        job = _open_job(ledger, study, key)
        if job is None:
            continue
        _gone(owner, key)
        if ledger.reattach(key, owner, me):
            taken.append((key, job))
    return taken


def _cancel_orphans(
    ledger: Ledger, study: Study | None, key: RunKey, checked: set[tuple[str, str]]
) -> None:
    """Cancel the jobs a lost driver submitted for the run's stage and block but never recorded
    (once per stage and block). Without an answer from squeue nothing can be checked: the run is
    put back as before (a Slurm that does not answer refuses the rerun's submission too)."""
    if study is None or key.host not in study.hosts or study.hosts[key.host].executor != "slurm":
        return
    if (key.stage, key.host) in checked:
        return
    checked.add((key.stage, key.host))
    folder = job_folder(study.root, key.stage, key.host)
    if not folder.is_dir():
        return  # nothing was ever submitted from here
    recorded = {job.job_id for job in ledger.jobs(stage=key.stage)}
    orphans = unrecorded_jobs(folder, recorded)
    if orphans:
        left = cancel_jobs(orphans)
        if left:
            raise ExecutorError(
                f"{key}: Slurm jobs {', '.join(left)} were submitted by a lost driver but never "
                "recorded, and are still queued after scancel; cancel them (`scancel "
                f"{' '.join(left)}`) and rerun"
            )


def recover_stale(
    ledger: Ledger, me: str, study: Study | None = None
) -> tuple[list[str], list[str]]:
    """Settle `running` rows whose driver is gone: (put back to rerun, finished results adopted).

    Refuses while another driver is alive.
    """
    recovered: list[str] = []
    adopted: list[str] = []
    checked: set[tuple[str, str]] = set()
    for key, owner in sorted(ledger.running_owners().items()):
        if owner == me:
            continue
        _gone(owner, key)
        if _open_job(ledger, study, key) is not None:
            continue  # its job still runs: the `stagewise run` of its stage re-attaches to it
        _cancel_orphans(ledger, study, key, checked)
        summary = finished_result(study, key) if study is not None else None
        if summary is not None:
            ledger.finish(
                key,
                "succeeded",
                summary=summary,
                checkpoint_path=summary.get("checkpoint_path"),
                checkpoint_sha256=summary.get("checkpoint_sha256"),
                source=f"recovered from {owner}",
                owner=owner,
            )
            adopted.append(str(key))
        elif ledger.mark_interrupted(key, owner, f"driver {owner} is gone; rerun from scratch"):
            recovered.append(str(key))
    return recovered, adopted


__all__ = ["REATTACHABLE", "finished_result", "reattach_stale", "recover_stale"]
