"""Settling what a lost driver left behind: its `running` rows are put back or adopted.

A driver killed mid-stage (SIGKILL, reboot) leaves rows marked `running` under its name. The
next driver, holding the run lock, adopts a run that had finished in the instant before the
driver died (its summary.json is whole) and puts every other one back as `interrupted`, to be
rerun from scratch, so nothing finished is repeated and nothing unfinished is lost.
"""

from __future__ import annotations

from typing import Any

from stagewise.errors import ExecutorError
from stagewise.executors.ownership import owner_alive
from stagewise.ledger import Ledger, RunKey
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


def recover_stale(
    ledger: Ledger, me: str, study: Study | None = None
) -> tuple[list[str], list[str]]:
    """Settle `running` rows whose driver is gone: (put back to rerun, finished results adopted).

    Refuses while another driver is alive.
    """
    recovered: list[str] = []
    adopted: list[str] = []
    for key, owner in sorted(ledger.running_owners().items()):
        if owner == me:
            continue
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


__all__ = ["finished_result", "recover_stale"]
