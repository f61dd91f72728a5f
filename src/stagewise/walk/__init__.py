"""`stagewise run DIR`: walk a whole study to its end, keeping the frozen-before-run discipline.

The walk is the manual protocol done in order: for each stage (declared order is a dependency
order, the loader guarantees it), make sure every gate pooling it is frozen (or freeze it with
`freeze=True`), run the stage with `run_stage`, and apply each gate once every stage it pools is
complete, so its decision feeds the next stages. It stops, leaving everything in the ledger, where
a human or another host must act: runs awaiting import from an external host, a gate declared
`decide = "manual"`, a failed run. Because each step is read back from the ledger, running it
again after a kill (or after the human acted) carries on where it stopped: finished runs are not
rerun, frozen gates are not refrozen, decided gates are not reapplied.
"""

from stagewise.walk.driver import run_study
from stagewise.walk.dry_run import dry_run_lines
from stagewise.walk.progress import WalkReporter, gate_line
from stagewise.walk.record import EXIT_CODES, StudyWalk, WalkOutcome
from stagewise.walk.steps import freeze_reason

__all__ = [
    "EXIT_CODES",
    "StudyWalk",
    "WalkOutcome",
    "WalkReporter",
    "dry_run_lines",
    "freeze_reason",
    "gate_line",
    "run_study",
]
