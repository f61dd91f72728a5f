"""`stagewise demo`: the whole method, end to end, on the embedded corpus and the CPU.

It writes a real study folder (six recipes, three budgets, two seeds at the later levels, two
local CPU slots as host blocks), prepares the sample corpus with a small tokenizer, and then walks
the protocol: freeze a stage's gate, run the stage with the real runner, apply the gate, and so
on up to the confirmation, followed by sensitivity, budget, report and bundle. Everything is in
the ledger, so an interrupted demo resumes where it stopped when started again.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from stagewise.budget_units import format_duration
from stagewise.errors import StudyError
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


def _gates_needing_freeze(study: Study, stage_id: str) -> list[str]:
    return [g.gate_id for g in study.gates_of_stage(stage_id)]


def _gates_ready(study: Study, stage_id: str, finished: set[str]) -> list[str]:
    """Gates whose pooled stages are all finished once `stage_id` is."""
    return [
        g.gate_id
        for g in study.gates_of_stage(stage_id)
        if all(s in finished or s == stage_id for s in g.stages)
    ]


def run_demo(
    out: Path,
    *,
    quick: bool = False,
    workers: int | None = None,
    reporter_factory: Any = None,
    say: Any = print,
) -> DemoResult:
    """Run (or resume) the demo study in `out`; `say` prints one line of narration."""
    from stagewise.errors import RunFailed
    from stagewise.executors.stage import NullReporter, run_stage
    from stagewise.gates.budget import budget
    from stagewise.gates.decide import apply_gate
    from stagewise.gates.freeze import freeze, require_frozen
    from stagewise.gates.sensitivity import sensitivity
    from stagewise.report.bundle import write_bundle
    from stagewise.report.html import write_report

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
    finished: set[str] = set()
    with Ledger.open(study.root) as ledger:
        for stage_id in study.stages:
            # The stage's gate is frozen before the stage runs: that is the point of the method.
            for gate_id in _gates_needing_freeze(study, stage_id):
                outcome = freeze(
                    study, ledger, gate_id, reason="frozen by stagewise demo before its stage"
                )
                note = "frozen" if outcome.created else "already frozen"
                say(f"gate {gate_id}: {note}, sha256 {outcome.record.sha256[:16]}")
            reporter = reporter_factory() if reporter_factory else NullReporter()
            state = run_stage(
                study,
                ledger,
                stage_id,
                workers=workers,
                retries=1,
                reporter=reporter,
                frozen_check=require_frozen,
            )
            if state.stopped:
                raise KeyboardInterrupt
            if state.failed:
                raise RunFailed(
                    f"stage {stage_id}: {len(state.failed)} run(s) failed; see `stagewise status "
                    f"{study.root}` and the logs under {study.root / 'runs'}",
                    cause="failed",
                )
            for gate_id in _gates_ready(study, stage_id, finished):
                applied = apply_gate(study, ledger, gate_id)
                obj = applied.object
                result.gates.append(obj)
                say(_gate_line(study, obj))
            finished.add(stage_id)
        final = [g for g in study.gates.values() if g.kind == "confirm"]
        for gate in final:
            sens = sensitivity(study, ledger, gate.gate_id)
            for line in _sensitivity_lines(study, sens):
                say(line)
        result.budget = budget(study, ledger)
    result.report = write_report(study.root).html
    result.bundle = study.root / "bundle"
    if result.bundle.exists():
        shutil.rmtree(result.bundle)
    write_bundle(study.root, result.bundle)
    result.seconds = time.monotonic() - start
    return result


def _label(study: Study, cid: str) -> str:
    try:
        return study.condition(cid).label
    except KeyError:
        return cid


def _why(obj: dict[str, Any], cond: dict[str, Any]) -> str:
    """The declared reason of the rule that decided this condition's verdict."""
    wanted = {"promote": "selected", "pass": "holds", "fail": "fails"}.get(cond["verdict"])
    if wanted is None:
        return ""
    for text in cond.get("reasons", []):
        for rule in obj.get("rules", []):
            head = f"{rule['description']}: "
            if str(text).startswith(head) and str(text)[len(head) :].startswith(wanted):
                return str(rule.get("reason") or rule["description"])
    return ""


def _gate_line(study: Study, obj: dict[str, Any]) -> str:
    groups: dict[str, list[str]] = {}
    for cond in obj["conditions"]:
        why = _why(obj, cond)
        groups.setdefault(cond["verdict"], []).append(cond["label"] + (f" ({why})" if why else ""))
    order = ("promote", "pass", "fail", "stop", "untested", "incomplete")
    body = "; ".join(f"{v} {', '.join(groups[v])}" for v in order if v in groups)
    return f"gate {obj['gate']} ({obj['kind']}, {len(obj['cells'])} host-seed cells): {body}"


def _sensitivity_lines(study: Study, sens: dict[str, Any]) -> list[str]:
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
