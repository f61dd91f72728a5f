"""The exceptions stagewise raises, as one small tree.

StagewiseError                 base: the CLI prints its message on one line, exit code 2
├── StudyError                 study.toml / matrix invalid (names file, key and expectation)
├── LedgerError                the ledger cannot be opened, migrated or written
├── ImportRejected             a results file was refused as a whole; nothing was recorded
├── FrozenRuleMismatch         a gate changed after it was frozen, or is not frozen
├── DecisionError              a gate decision conflicts with one already recorded
├── DataError                  corpus, shards or tokenizer unusable
├── RunnerError                bad training configuration
├── CheckpointError            a checkpoint fails verification
├── ExecutorError              a stage cannot be executed (no slot, cluster unreachable, ...)
│   └── ClusterLost            the cluster went away mid-stage (exit 75: resume when it is back)
├── RunFailed                  a training run failed (carries the cause)
├── BundleError                report/bundle cannot be written or does not verify
└── ExportError                an export (MLflow) cannot be written: extra missing, store refused
"""

from __future__ import annotations


class StagewiseError(Exception):
    """Base of every error a user can cause; `exit_code` is what the CLI returns."""

    exit_code = 2


class StudyError(StagewiseError):
    pass


class LedgerError(StagewiseError):
    pass


class ImportRejected(StagewiseError):
    pass


class FrozenRuleMismatch(StagewiseError):
    pass


class DecisionError(StagewiseError):
    pass


class DataError(StagewiseError):
    pass


class RunnerError(StagewiseError):
    pass


class CheckpointError(StagewiseError):
    exit_code = 1


class ExecutorError(StagewiseError):
    pass


class ClusterLost(ExecutorError):
    """The cluster a stage runs on went away mid-stage (its scheduler stopped answering, or a
    block has had no live node longer than allowed). Its own exit code, 75 (EX_TEMPFAIL: try
    again later), tells it apart from a failed run (1) and bad input (2): nothing failed, the
    runs in flight were put back, and the same command resumes once the cluster is back."""

    exit_code = 75

    def __init__(
        self, message: str, in_flight: tuple[str, ...] = (), *, keep_jobs: bool = False
    ) -> None:
        super().__init__(message)
        self.in_flight = in_flight
        # The runs in flight live on as cluster jobs (Slurm): they stay `running` under this
        # driver, and the next `stagewise run` re-attaches to them instead of rerunning them.
        self.keep_jobs = keep_jobs


class RunFailed(StagewiseError):
    exit_code = 1

    def __init__(self, message: str, cause: str = "failed") -> None:
        super().__init__(message)
        self.cause = cause


class BundleError(StagewiseError):
    pass


class ExportError(StagewiseError):
    pass


__all__ = [
    "BundleError",
    "CheckpointError",
    "ClusterLost",
    "DataError",
    "DecisionError",
    "ExecutorError",
    "ExportError",
    "FrozenRuleMismatch",
    "ImportRejected",
    "LedgerError",
    "RunFailed",
    "RunnerError",
    "StagewiseError",
    "StudyError",
]
