"""stagewise: staged promotion for micro-pretraining.

The public API follows the data flow: a study (matrix + protocol) -> a plan -> runs executed or
imported into the ledger -> gate analyses and decisions -> report and audit bundle. The CLI is a
thin layer over these functions. Heavy modules (torch, matplotlib, scipy) load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from stagewise.errors import (
    BundleError,
    CheckpointError,
    DataError,
    DecisionError,
    ExecutorError,
    FrozenRuleMismatch,
    ImportRejected,
    LedgerError,
    RunFailed,
    RunnerError,
    StagewiseError,
    StudyError,
)
from stagewise.ledger import Ledger, RunKey, RunRecord
from stagewise.plan import Plan, build_plan
from stagewise.study import Condition, Gate, Host, Rule, Stage, Study, load_study

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "init_study": "stagewise.create",
    "import_results": "stagewise.executors.external",
    "decide_manually": "stagewise.gates.manual",
    "freeze": "stagewise.gates.freeze",
    "require_frozen": "stagewise.gates.freeze",
    "apply_gate": "stagewise.gates.decide",
    "evaluate_gate": "stagewise.gates.evaluate",
    "sensitivity": "stagewise.gates.sensitivity",
    "verdict_confidence": "stagewise.gates.confidence",
    "seed_plan": "stagewise.gates.seed_planning",
    "budget": "stagewise.gates.budget",
    "run_stage": "stagewise.executors.stage",
    "run_study": "stagewise.walk",
    "write_report": "stagewise.report.html",
    "export_mlflow": "stagewise.export.mlflow",
    "write_bundle": "stagewise.audit.bundle",
    "verify_bundle": "stagewise.audit.verify",
    "run_demo": "stagewise.demo",
    "study_status": "stagewise.status",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stagewise' has no attribute {name!r}")


__all__ = [
    "BundleError",
    "CheckpointError",
    "Condition",
    "DataError",
    "DecisionError",
    "ExecutorError",
    "FrozenRuleMismatch",
    "Gate",
    "Host",
    "ImportRejected",
    "Ledger",
    "LedgerError",
    "Plan",
    "Rule",
    "RunFailed",
    "RunKey",
    "RunRecord",
    "RunnerError",
    "Stage",
    "StagewiseError",
    "Study",
    "StudyError",
    "__version__",
    "apply_gate",
    "budget",
    "build_plan",
    "decide_manually",
    "evaluate_gate",
    "export_mlflow",
    "freeze",
    "import_results",
    "init_study",
    "load_study",
    "require_frozen",
    "run_demo",
    "run_stage",
    "run_study",
    "seed_plan",
    "sensitivity",
    "study_status",
    "verdict_confidence",
    "verify_bundle",
    "write_bundle",
    "write_report",
]
