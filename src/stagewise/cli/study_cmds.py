"""Study commands: init, validate, plan, status, import, decide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from stagewise.analysis.confidence import DEFAULT_CONFIDENCE
from stagewise.cli.common import SeedAlias, console, emit_json, fmt, open_study, print_flagged
from stagewise.create import init_study, start_new_ledger
from stagewise.errors import DecisionError, StagewiseError, StudyError
from stagewise.executors.external import import_results
from stagewise.gates.confidence import DEFAULT_SEED, check_seed
from stagewise.gates.manual import decide_manually, withdraw
from stagewise.gates.seed_planning import seed_plan
from stagewise.ledger import LEDGER_FILE, Ledger
from stagewise.plan import build_plan
from stagewise.status import edits_since_freeze, study_status
from stagewise.study import load_study
from stagewise.study.init import EXAMPLES, next_steps
from stagewise.words import plural

StudyDir = Annotated[Path, typer.Argument(help="Study folder (holds study.toml and the ledger).")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def init(
    folder: Annotated[Path, typer.Argument(help="New study folder (must be empty or absent).")],
    example: Annotated[
        str | None,
        typer.Option("--example", help=f"Copy a shipped example: {', '.join(EXAMPLES)}."),
    ] = None,
    new_ledger: Annotated[
        str | None,
        typer.Option(
            "--new-ledger",
            help="REASON: start a new, empty ledger in an existing study whose ledger is lost "
            "(the old files are kept aside; the new chain records the reason).",
        ),
    ] = None,
) -> None:
    """Create a study folder (a template, or a copy of a shipped example) and its ledger."""
    if new_ledger is not None:
        if example is not None:
            raise StudyError("--new-ledger starts over an existing study: leave out --example")
        head = start_new_ledger(folder, new_ledger)
        console.print(f"started a new ledger in {folder} (chain head {head}); reason recorded")
        return
    study = init_study(folder, example)
    console.print(f"created study {study.name!r} in {folder}", markup=False, soft_wrap=True)
    # One command a line, never wrapped mid-path: a newcomer copies them in this order.
    console.print("next, in this order:", markup=False)
    for step in next_steps(folder, example):
        console.print(f"  {step}", markup=False, soft_wrap=True)


def validate(folder: StudyDir, json_: JsonFlag = False) -> None:
    """Check study.toml and the matrix; print a one-line summary or the first problem.

    A frozen gate edited since its freeze is reported (gate and run refuse it until amended);
    that never fails validation.
    """
    try:
        study = load_study(folder)
    except StagewiseError as exc:
        if not json_:
            raise
        emit_json({"ok": False, "study": None, "error": str(exc)})
        raise typer.Exit(exc.exit_code) from None
    counts = {
        "conditions": len(study.conditions),
        "hosts": len(study.hosts),
        "stages": len(study.stages),
        "gates": len(study.gates),
    }
    edited: dict[str, tuple[str | None, list[str]]] = {}
    note = None
    if (study.root / LEDGER_FILE).is_file():
        try:
            with Ledger.open(study.root, create=False) as ledger:
                for gate_id in study.gates:
                    record = ledger.current_freeze(gate_id)
                    if record is not None:
                        edits = edits_since_freeze(study, ledger, gate_id)
                        if edits:
                            edited[gate_id] = (record.frozen_at, edits)
        except StagewiseError as exc:
            note = f"the ledger was not read ({exc})"
    if json_:
        emit_json(
            {
                "ok": True,
                "study": study.name,
                "error": None,
                **counts,
                "edited_since_freeze": {g: edits for g, (_at, edits) in edited.items()},
            }
        )
        return
    console.print(
        f"ok: {study.name}: "
        + ", ".join(plural(n, noun.rstrip("s")) for noun, n in counts.items()),
        markup=False,
    )
    for gate_id, (frozen_at, edits) in edited.items():
        _print_edits(gate_id, frozen_at, edits, folder)
    if note is not None:
        console.print(f"note: {note}", markup=False, soft_wrap=True)


def _print_edits(gate: str, frozen_at: str | None, edits: list[str], folder: Path) -> None:
    if not edits:
        return
    console.print(
        f"note: gate {gate} was edited since its freeze of {frozen_at}: {'; '.join(edits)} "
        f"(gate and run refuse it until `stagewise freeze {folder} {gate} --amend --reason ...`)",
        style="yellow",
        markup=False,
        soft_wrap=True,
    )


def plan(
    folder: StudyDir,
    as_json: JsonFlag = False,
    seeds_for: Annotated[
        str | None,
        typer.Option(
            "--seeds-for",
            metavar="GATE",
            help="Seeds per host (and hosts) with which GATE's frozen thresholds would be decided.",
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option("--confidence", help="With --seeds-for: the confidence level.")
    ] = DEFAULT_CONFIDENCE,
    power: Annotated[
        float, typer.Option("--power", help="With --seeds-for: the power to decide a threshold.")
    ] = 0.9,
    from_gate: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="GATE",
            help="With --seeds-for: the gate whose cells give the variance (default: the "
            "nearest decided upstream gate with cells).",
        ),
    ] = None,
    seed: Annotated[
        int,
        typer.Option("--simulation-seed", help="With --seeds-for: the seed of the simulations."),
    ] = DEFAULT_SEED,
    seed_alias: SeedAlias = None,
) -> None:
    """Every run of every stage that can be known now, with budgeted GPU-hours.

    With --seeds-for GATE: the seeds per host (and hosts) each frozen threshold rule of GATE
    needs to be decided, from the variance observed at an earlier gate (docs/confidence.md).
    """
    check_seed(
        seed_alias if seed_alias is not None else seed,
        "--seed" if seed_alias is not None else "--simulation-seed",
    )
    seed = seed if seed_alias is None else seed_alias
    if seeds_for is not None:
        _seeds_for(folder, seeds_for, as_json, confidence, power, from_gate, seed)
        return
    if from_gate is not None:
        raise StudyError("--from needs --seeds-for GATE (it names where the variance comes from)")
    with open_study(folder) as (study, ledger):
        result = build_plan(study, ledger).to_json()
    if as_json:
        emit_json(result)
        return
    table = Table(title=f"plan of {result['study']}")
    for col in ("stage", "budget", "seeds", "hosts", "candidates", "runs", "GPU-hours"):
        table.add_column(col, justify="right" if col in ("runs", "GPU-hours") else "left")
    for st in result["stages"]:
        count = st["candidate_count"]
        if st["candidates"] is not None:
            cands = (
                f"{count} ({st['candidate_source']}{', manual' if st['decision_manual'] else ''})"
            )
        elif count is not None:
            cands = f"{st['status']} {count} ({st['candidate_source']})"
        else:
            cands = f"pending ({st['candidate_source']})"
        hours = st["budgeted_gpu_hours"]
        table.add_row(
            st["stage"],
            st["budget"],
            ",".join(map(str, st["seeds"])),
            ",".join(st["hosts"]),
            cands,
            str(len(st["runs"])) if st["candidates"] is not None else "-",
            _hours_cell(hours, st),
        )
    console.print(table)
    total = result["total_budgeted_gpu_hours"]
    console.print(f"total budgeted GPU-hours: {total if isinstance(total, str) else f'{total:g}'}")


def _seeds_for(
    folder: Path,
    gate: str,
    as_json: bool,
    confidence: float,
    power: float,
    from_gate: str | None,
    seed: int,
) -> None:
    with open_study(folder) as (study, ledger):
        result = seed_plan(
            study,
            ledger,
            gate,
            from_gate=from_gate,
            confidence=confidence,
            power=power,
            seed=seed,
        )
        labels = {c.condition_id: c.label for c in study.conditions}
    if as_json:
        emit_json(result.to_json())
        return
    out = console if console.is_terminal else Console(highlight=False, width=160)
    out.print(
        f"seeds for {gate} (confidence {confidence:g}, power {power:g}), variance from "
        f"{result.from_gate}; planned: {result.planned_hosts} hosts x "
        f"{result.planned_seeds_per_host} seeds per host"
    )
    table = Table(title=f"{gate}: seeds per host to decide each frozen threshold")
    cols = ("condition", "rule", "threshold", "observed gap", "sigma_d", "seeds/host", "hosts")
    for col in (*cols, "achievable", "note"):
        table.add_column(col, justify="left" if col in ("condition", "rule", "note") else "right")
    for r in result.rows:
        extra = (
            f"P(correct selection) with the plan {r.p_correct_selection:.3f}; "
            if r.p_correct_selection is not None
            else ""
        )
        table.add_row(
            labels.get(r.condition_id, r.condition_id),
            r.rule,
            "-" if r.threshold is None else f"{r.threshold:g}",
            fmt(r.observed_gap),
            fmt(r.sigma_d),
            "-" if r.seeds_per_host is None else str(r.seeds_per_host),
            "-" if r.hosts is None else str(r.hosts),
            "yes" if r.achievable else "no",
            extra + r.note,
        )
    out.print(table)
    for note in result.notes:
        out.print(f"note: {note}", markup=False)


def _hours_cell(hours: float | None, st: dict[str, Any]) -> str:
    if hours is not None:
        return f"{hours:g}"
    if st.get("budget_unit", "seconds") == "seconds" or st["candidate_count"] is None:
        return "pending"
    # A token or step budget takes as long as the hosts need: estimated, or unknown.
    estimate = st.get("estimated_gpu_hours")
    return f"~{estimate:.3g} (estimate)" if estimate is not None else "unknown"


def status(folder: StudyDir, as_json: JsonFlag = False) -> None:
    """Runs by state per stage; freeze and decision per gate."""
    with open_study(folder) as (study, ledger):
        result = study_status(study, ledger)
    if as_json:
        emit_json(result)
        return
    table = Table(title=f"status of {result['study']}")
    for col in ("stage", "planned", "succeeded", "failed", "running", "interrupted", "pending"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for st in result["stages"]:
        r = st["runs"]
        table.add_row(
            st["stage"],
            "pending" if st["planned_runs"] is None else str(st["planned_runs"]),
            *(str(r[k]) for k in ("succeeded", "failed", "running", "interrupted", "pending")),
        )
    console.print(table)
    for st in result["stages"]:
        for row in st["retrying"]:
            console.print(
                f"{st['stage']}: retrying {row['run']} (attempt {row['attempt']}, after "
                f"{row['after']})",
                markup=False,
                soft_wrap=True,
            )
        for text in st["waiting"]:
            console.print(f"{st['stage']}: waiting: {text}", markup=False, soft_wrap=True)
    gates = Table(title="gates")
    for col in ("gate", "kind", "stages", "frozen", "decision"):
        gates.add_column(col)
    for g in result["gates"]:
        frozen = (
            f"{g['frozen_sha256'][:12]}{' post hoc' if g['post_hoc'] else ''}"
            if g["frozen"]
            else "no"
        )
        d = g["decision"]
        decision = (
            "-" if d is None else f"{'manual: ' if d['manual'] else ''}{', '.join(d['promoted'])}"
        )
        gates.add_row(g["gate"], g["kind"], ",".join(g["stages"]), frozen, decision)
    console.print(gates)
    print_flagged(result["flagged_runs"], result["min_steps"])
    for g in result["gates"]:
        if isinstance(g.get("recipes"), str):
            console.print(f"{g['gate']}: {g['recipes']}", markup=False)
        _print_edits(g["gate"], g.get("frozen_at"), g.get("changed_since_freeze") or [], folder)
    if result["jobs"]:
        jobs = Table(title="cluster jobs")
        for col in ("run", "try", "job", "state", "reason", "node", "log"):
            jobs.add_column(col)
        for j in result["jobs"]:
            jobs.add_row(
                j["run"],
                str(j["attempt"]),
                j["job_id"],
                j["job_state"] or "-",
                j["reason"] or "-",
                j["node"] or "-",
                j["job_log"] or "-",
            )
        console.print(jobs)
    console.print(f"chain head: {result['chain_head']}", soft_wrap=True)
    if not result["chain_ok"]:
        console.print(
            f"the ledger fails its integrity check: first broken link: "
            f"{result['first_broken_link']} ({plural(len(result['chain_problems']), 'problem')})",
            style="red",
            markup=False,
            soft_wrap=True,
        )


def import_(
    folder: StudyDir,
    files: Annotated[
        list[Path], typer.Argument(help="CSV/JSON results, summary.json files or logs.")
    ],
    stage: Annotated[
        str | None, typer.Option(help="Stage for files that do not name it (logs).")
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Host block for files that do not name it.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for files that do not name it.")] = None,
    condition_id: Annotated[
        str | None, typer.Option(help="Condition for files that do not name it.")
    ] = None,
) -> None:
    """Import results from hosts the tool does not drive; a file with any bad row is refused whole."""
    defaults = {
        k: v
        for k, v in (
            ("stage", stage),
            ("host", host),
            ("seed", seed),
            ("condition_id", condition_id),
        )
        if v is not None
    }
    with open_study(folder, start=True) as (study, ledger):
        report = import_results(study, ledger, files, defaults)
    for path, added, unchanged in report:
        console.print(f"{path.name}: {added} recorded, {unchanged} already present")


def decide(
    folder: StudyDir,
    gate: Annotated[str, typer.Argument(help="Gate id.")],
    promote: Annotated[
        str | None, typer.Option(help="Comma-separated condition ids (or labels).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (required).")] = "",
    source: Annotated[str | None, typer.Option(help="Where the decision comes from.")] = None,
    withdraw_: Annotated[
        bool, typer.Option("--withdraw", help="Withdraw the gate's active decision.")
    ] = False,
) -> None:
    """Record a decision taken outside the tool (flagged manual), or withdraw one."""
    with open_study(folder, start=True) as (study, ledger):
        if withdraw_:
            if promote is not None:
                raise DecisionError("--withdraw and --promote exclude each other; give one")
            record = withdraw(ledger, study, gate, reason)
            console.print(f"withdrew the {record.kind} decision of {gate}")
            return
        if promote is None:
            raise DecisionError("give --promote ID,ID,... (or --withdraw)")
        record = decide_manually(
            study, ledger, gate, promote.split(","), reason=reason, source=source
        )
    console.print(f"recorded manual decision for {gate}: promote {', '.join(record.promoted)}")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(validate)
    app.command()(plan)
    app.command()(status)
    app.command("import")(import_)
    app.command()(decide)
