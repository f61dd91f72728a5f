"""The public surface is exactly what __all__ says, and every lazy name resolves."""

from __future__ import annotations

import subprocess
import sys

import stagewise

INTENDED = {
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
}


def test_all_is_the_intended_surface() -> None:
    assert set(stagewise.__all__) == INTENDED
    for name in stagewise.__all__:
        assert getattr(stagewise, name) is not None, name


def test_errors_share_one_base() -> None:
    for name in stagewise.__all__:
        obj = getattr(stagewise, name)
        if isinstance(obj, type) and name.endswith("Error") and name != "StagewiseError":
            assert issubclass(obj, stagewise.StagewiseError)


def test_import_and_cli_help_do_not_load_torch() -> None:
    code = "import sys, stagewise, stagewise.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
