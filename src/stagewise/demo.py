"""`stagewise demo`: the whole method, end to end, on the embedded corpus and the CPU.

It writes a real study folder (six recipes, three budgets, two seeds at the later levels, two
local CPU slots as host blocks), prepares the sample corpus with a small tokenizer, and then walks
it with `stagewise.run_study` (what `stagewise run DIR --freeze` does): freeze a stage's gate,
run the stage with the real runner, apply the gate, and so on up to the confirmation; then
sensitivity, budget, report and bundle. Everything is in the ledger, so an interrupted demo
resumes where it stopped when started again. This module only makes the study and its summary.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stagewise.budget_units import format_duration
from stagewise.errors import StudyError
from stagewise.executors.stage import Reporter
from stagewise.ledger import Ledger
from stagewise.study import Study, load_study


@dataclass(frozen=True)
class DemoMode:
    name: str
    budgets: tuple[str, str, str]  # screen, replicate, confirm
    screen_k: int
    keep_comparator: bool


FULL = DemoMode("full", ("8s", "15s", "30s"), screen_k=2, keep_comparator=True)
QUICK = DemoMode("quick", ("3s", "4s", "5s"), screen_k=1, keep_comparator=False)
VOCAB_SIZE = 512  # small enough to train in seconds on CPU, big enough for real BPE merges


@dataclass
class DemoResult:
    folder: Path
    mode: str
    seconds: float = 0.0
    gates: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    report: Path | None = None
    bundle: Path | None = None


def _template_dir() -> Path:
    return Path(str(resources.files("stagewise.examples") / "demo"))


def write_demo_study(folder: Path, mode: DemoMode) -> Study:
    """Create the demo study folder (if absent) and return it; refuse a foreign folder."""
    study_file = folder / "study.toml"
    if study_file.exists():
        study = load_study(folder)
        declared = str(study.raw.get("study", {}).get("description", ""))
        if study.name != "demo":
            raise StudyError(
                f"{folder}: holds the study {study.name!r}, not a demo; choose another --out"
            )
        if f"({mode.name})" not in declared:
            other = "--quick" if mode is FULL else "no --quick"
            raise StudyError(
                f"{folder}: this demo was started with {other}; resume it the same way or choose another --out"
            )
        return study
    if folder.exists() and any(folder.iterdir()):
        raise StudyError(f"{folder}: exists and is not a demo study; choose another --out")
    folder.mkdir(parents=True, exist_ok=True)
    template = _template_dir()
    shutil.copy2(template / "matrix.csv", folder / "matrix.csv")
    text = (template / "study.toml.in").read_text(encoding="utf-8")
    keep = (
        '\n  { rule = "keep", roles = ["comparator"], reason = "predeclared comparator" },'
        if mode.keep_comparator
        else ""
    )
    text = text.format(
        s1=mode.budgets[0],
        s2=mode.budgets[1],
        s3=mode.budgets[2],
        mode=mode.name,
        k1=mode.screen_k,
        keep_comparator=keep,
    )
    study_file.write_text(text, encoding="utf-8")
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        ledger.log_event("study.init", study.name, {"example": f"demo ({mode.name})"})
    return study


def prepare_data(study: Study) -> Path:
    from stagewise.data.prepare import prepare

    data = study.root / str(study.runner.get("data", "data"))
    if not (data / "data.json").is_file():
        prepare("sample", data, vocab_size=VOCAB_SIZE)
    return data


def run_demo(
    out: Path,
    *,
    quick: bool = False,
    workers: int | None = None,
    reporter: Reporter | None = None,
    say: Callable[[str], None] = print,
    retry_failed: bool = False,
) -> DemoResult:
    """Run (or resume) the demo study in `out` with `run_study`; `say` prints narration lines.

    `retry_failed` reruns runs recorded as failed (as `stagewise run --retry-failed` does), so a
    demo whose runs failed (a broken install, since fixed) finishes its walk, report and bundle.
    """
    from stagewise.audit.bundle import write_bundle
    from stagewise.errors import RunFailed
    from stagewise.gates.budget import budget
    from stagewise.gates.sensitivity import sensitivity
    from stagewise.report.html import write_report
    from stagewise.walk import run_study

    mode = QUICK if quick else FULL
    start = time.monotonic()
    study = write_demo_study(out, mode)
    say(
        f"study {study.root} ({mode.name}): {len(study.conditions)} recipes, budgets "
        f"{' -> '.join(format_duration(s.budget_seconds) for s in study.stages.values())}, "
        f"host blocks {', '.join(study.hosts)}"
    )
    t0 = time.monotonic()
    data = prepare_data(study)
    say(
        f"data: embedded sample corpus, vocab {VOCAB_SIZE} ({data.name}/, {time.monotonic() - t0:.1f}s)"
    )
    result = DemoResult(folder=study.root, mode=mode.name)
    with Ledger.open(study.root) as ledger:
        # The walk freezes each stage's gates before the stage runs: the point of the method.
        walk = run_study(
            study,
            ledger,
            freeze=True,
            workers=workers,
            retries=1,
            retry_failed=retry_failed,
            reporter=reporter,
            say=say,
            rerun=rerun_command(out, quick=quick, workers=workers),
        )
        if walk.outcome == "interrupted":
            raise KeyboardInterrupt
        if walk.outcome != "complete":
            raise RunFailed(
                f"{walk.waiting_for or walk.outcome}; see `stagewise status {study.root}`",
                cause="failed",
            )
        result.gates = [_decision(study, gate_id) for gate_id in study.gates]
        for gate in study.gates.values():
            if gate.kind == "confirm":
                for line in _sensitivity_lines(sensitivity(study, ledger, gate.gate_id).to_json()):
                    say(line)
        result.budget = budget(study, ledger).to_json()
    result.report = write_report(study.root).html
    result.bundle = study.root / "bundle"
    if result.bundle.exists():
        shutil.rmtree(result.bundle)
    write_bundle(study.root, result.bundle)
    result.seconds = time.monotonic() - start
    return result


def rerun_command(out: Path, *, quick: bool, workers: int | None) -> str:
    """The demo command that retries the failed runs and finishes the demo (as typed here)."""
    argv = ["stagewise", "demo", "--out", str(out)]
    argv += ["--quick"] if quick else []
    argv += ["--workers", str(workers)] if workers is not None else []
    return shlex.join([*argv, "--retry-failed"])


def _decision(study: Study, gate_id: str) -> dict[str, Any]:
    """The gate's recorded decision, as `apply_gate` wrote it (also when applied by an earlier,
    interrupted demo)."""
    path = study.root / "decisions" / f"{gate_id}.json"
    obj: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return obj


def _sensitivity_lines(sens: dict[str, Any]) -> list[str]:
    lines = []
    for row in sens.get("rows", []):
        if row.get("role") != "declared":
            continue
        lines.append(
            f"sensitivity {sens['gate']} {row['label']} {row['statistic']} = {row['observed']:+.4f} "
            f"(rule <= {row['declared_threshold']:g}: {row['declared_verdict']}); {row['note']}"
        )
    return lines


def summary_lines(result: DemoResult) -> list[str]:
    lines = [f"demo finished in {result.seconds:.0f}s ({result.mode})"]
    for obj in result.gates:
        promoted = ", ".join(
            c["label"] for c in obj["conditions"] if c["verdict"] in ("promote", "pass")
        )
        verb = "promoted" if obj["kind"] == "promote" else "passed"
        lines.append(f"  {obj['gate']}: {verb} {promoted or 'none'}")
    b = result.budget
    if b:
        # On CPU the "GPU-hours" of the accounting are CPU-slot hours; minutes read better here.
        def minutes(hours: Any) -> str:
            return "-" if hours is None else f"{60 * float(hours):.2f} CPU-min"

        lines.append(
            f"  spent: {minutes(b.get('total_recorded_gpu_hours'))} recorded, "
            f"{minutes(b.get('total_budgeted_gpu_hours'))} budgeted"
        )
        for cf in b.get("counterfactuals", []):
            added = cf.get("added_vs_executed")
            extra = f" (+{minutes(added)})" if added else ""
            lines.append(
                f"  {cf.get('scenario')}: {minutes(cf.get('confirmation_gpu_hours'))}{extra}"
            )
    lines.append(f"  report: {result.report}")
    lines.append(f"  bundle: {result.bundle}  (check it: stagewise verify {result.bundle})")
    return lines
