"""From (study, condition, stage, seed, host) to the argv of one run, its folders and its timeout.

The default command is our runner, `python -m stagewise train`, with the condition's matrix
parameters, the stage budget and seed, and the study's `[runner]` defaults as `--kebab-case`
options. A study (`[runner] command = [...]`) or a host (`[hosts.x] command = [...]`) may name
its own command instead: an argv template whose elements may hold `{placeholders}`; each
element is substituted on its own and the result is started without a shell, so a value with
spaces or quotes stays one argument and nothing is ever interpreted by a shell.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from stagewise.errors import ExecutorError
from stagewise.study.model import Condition, Host, Stage, Study

# [runner] keys that configure the executor, not the runner: never passed to `stagewise train`.
EXECUTOR_KEYS = frozenset(
    {"grace_seconds", "startup_seconds", "timeout_seconds", "warm_workers", "min_steps"}
)
# Runner options that are paths: relative values are relative to the study folder.
PATH_KEYS = frozenset({"data"})

MIN_GRACE_SECONDS = 60.0  # a minute covers eval + checkpoint of the small models
GRACE_FRACTION = 0.5  # long budgets get proportionally more room (slow eval, slow disks)
UNTIMED_LIMIT_SECONDS = 86400.0  # a day: catches a hung token/step-budget run, nothing else
STARTUP_SECONDS = 120.0  # process start, imports, data loading, torch.compile warm-up
MEASURED_FACTOR = 3.0  # a run may take 3x the overhead measured on this study's runs

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


def format_value(value: Any) -> str:
    """Numbers as a runner expects them on a command line: 4.0 -> '4', 0.04 -> '0.04'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    return str(value)


def kebab(name: str) -> str:
    return "--" + name.replace("_", "-")


def runner_values(
    study: Study, condition: Condition, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The runner options of one run: `[runner]` defaults < matrix params < overrides."""
    values: dict[str, Any] = {k: v for k, v in study.runner.items() if k not in EXECUTOR_KEYS}
    values.update(condition.params)
    values.update(overrides or {})
    for key in PATH_KEYS:
        if key in values and isinstance(values[key], str):
            values[key] = str((study.root / values[key]).resolve())
    return values


def command_template(study: Study, host: Host) -> tuple[str, ...] | None:
    """The argv template in force for a host (its own, else the study's), or None: our runner."""
    return host.command or study.command


def placeholders(
    study: Study,
    condition: Condition,
    stage: Stage,
    seed: int,
    host: Host,
    out_dir: Path,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Every name a command template may use, as strings."""
    values = {k: format_value(v) for k, v in runner_values(study, condition, overrides).items()}
    budget = stage.budget
    values.update(
        seed=str(seed),
        # A token or step stage has no time budget: these are "" there, and the others are ""
        # on a time stage, so a template names the budget it is built for.
        time_budget=format_value(budget.amount) if budget.unit == "seconds" else "",
        budget_seconds=format_value(budget.amount) if budget.unit == "seconds" else "",
        token_budget=format_value(budget.amount) if budget.unit == "tokens" else "",
        step_budget=format_value(budget.amount) if budget.unit == "steps" else "",
        out=str(out_dir),
        out_dir=str(out_dir),
        summary=str(out_dir / "summary.json"),
        condition_id=condition.condition_id,
        label=condition.label,
        role=condition.role,
        stage=stage.stage_id,
        host=host.name,
        study=str(study.root),
        python=sys.executable,
    )
    return values


def substitute(template: tuple[str, ...] | list[str], values: Mapping[str, str]) -> list[str]:
    """Fill `{name}` in each element; `{{` and `}}` are literal braces. Unknown names refuse."""
    out = []
    for element in template:

        def repl(match: re.Match[str], element: str = element) -> str:
            text = match.group(0)
            if text == "{{":
                return "{"
            if text == "}}":
                return "}"
            name = match.group(1)
            if name is None:
                raise ExecutorError(
                    f"command template element {element!r}: unbalanced brace; "
                    "write {{ or }} for a literal brace"
                )
            if name not in values:
                raise ExecutorError(
                    f"command template element {element!r}: unknown placeholder {{{name}}}; "
                    f"known: {', '.join(sorted(values))}"
                )
            return values[name]

        out.append(_PLACEHOLDER.sub(repl, element))
    return out


def build_argv(
    study: Study,
    condition: Condition,
    stage: Stage,
    seed: int,
    host: Host,
    out_dir: Path,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """The argv of one run (a list for Popen; never a shell string)."""
    template = command_template(study, host)
    if template is not None:
        values = placeholders(study, condition, stage, seed, host, out_dir, overrides)
        return substitute(template, values)
    argv = [sys.executable, "-m", "stagewise", "train"]
    for key, value in runner_values(study, condition, overrides).items():
        if key in ("time_budget", "token_budget", "step_budget", "seed", "out", "condition_id"):
            continue  # the stage and the run decide these
        if isinstance(value, bool):
            argv.append(kebab(key) if value else "--no-" + key.replace("_", "-"))
        else:
            argv += [kebab(key), format_value(value)]
    budget_option = {
        "seconds": "--time-budget",
        "tokens": "--token-budget",
        "steps": "--step-budget",
    }[stage.budget.unit]
    argv += [
        budget_option,
        format_value(stage.budget.amount),
        "--seed",
        str(seed),
        "--condition-id",
        condition.condition_id,
        "--out",
        str(out_dir),
    ]
    return argv


def run_env(
    study: Study, stage: Stage, condition: Condition, seed: int, host: Host, out_dir: Path
) -> dict[str, str]:
    """The run's facts as environment variables, for trainers that read them (stagewise.result)."""
    from stagewise import result

    budget_env = {
        "seconds": result.ENV_BUDGET_SECONDS,
        "tokens": result.ENV_TOKEN_BUDGET,
        "steps": result.ENV_STEP_BUDGET,
    }[stage.budget.unit]
    return {
        result.ENV_OUT: str(out_dir),
        result.ENV_SEED: str(seed),
        budget_env: format_value(stage.budget.amount),
        result.ENV_CONDITION_ID: condition.condition_id,
        result.ENV_STAGE: stage.stage_id,
        result.ENV_HOST: host.name,
    }


def supports_device_batch(study: Study, host: Host) -> bool:
    """Whether an OOM retry can lower the device batch: our runner, or a template using it."""
    template = command_template(study, host)
    return template is None or any("{device_batch_size}" in e for e in template)


def device_batch_size(study: Study, condition: Condition) -> int | None:
    value = runner_values(study, condition).get("device_batch_size")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def grace_seconds(
    study: Study, budget_seconds: float, measured_overhead: float | None = None
) -> float:
    """Time allowed beyond the budget before a run counts as hung and is killed.

    `[runner] grace_seconds` replaces the default. Once runs of this study have finished, the
    default comes from them: `measured_overhead` is the longest wall time a succeeded run took
    beyond its budget (process start, imports, data, evaluation, checkpoint, the last step's
    overshoot), and a run may take MEASURED_FACTOR times that (a loaded machine is slower),
    at least max(60 s, 50% of the budget). Before any run finished: max(60 s, 50% of the budget)
    + 120 s of start-up allowance (`[runner] startup_seconds`).
    """
    configured = study.runner.get("grace_seconds")
    if isinstance(configured, int | float) and not isinstance(configured, bool):
        if configured < 0:
            raise ExecutorError(
                f"runner.grace_seconds must be >= 0, but got grace_seconds={configured}"
            )
        return float(configured)
    floor = max(MIN_GRACE_SECONDS, GRACE_FRACTION * budget_seconds)
    if measured_overhead is not None and measured_overhead > 0:
        return max(floor, MEASURED_FACTOR * measured_overhead)
    startup = study.runner.get("startup_seconds", STARTUP_SECONDS)
    return floor + float(startup)


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO timestamp to another; None when either is missing or unreadable."""
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (b - a).total_seconds()


def measured_overhead(study: Study, runs: Iterable[Any]) -> float | None:
    """The longest wall time beyond its budget of this study's succeeded, timed runs, or None.

    Wall time is the ledger's claim-to-finish time, so it holds everything the deadline must
    cover; runs imported from elsewhere (no start time) and token/step budgets do not count."""
    worst: float | None = None
    for r in runs:
        if r.status != "succeeded" or r.stage not in study.stages:
            continue
        budget = study.stages[r.stage].budget_seconds
        wall = seconds_between(r.started_at, r.finished_at)
        if budget <= 0 or wall is None or wall <= 0:
            continue
        over = max(0.0, wall - budget)
        worst = over if worst is None else max(worst, over)
    return worst


def missing_data(study: Study, stage_ids: list[str] | tuple[str, ...]) -> str | None:
    """Why the runs of these stages cannot start for want of data on this machine, or None.

    Only hosts this machine starts runs on are checked (local executors): our runner needs a
    folder made by `stagewise data prepare` (its manifest), an own trainer whose argv names
    `{data}` needs the folder to exist. Checked before anything is frozen or started."""
    from stagewise.data.prepare import MANIFEST

    data = study.runner.get("data")
    if not isinstance(data, str):
        return None
    folder = (study.root / data).resolve()
    for stage_id in stage_ids:
        for name in study.stages[stage_id].hosts:
            host = study.hosts[name]
            if host.executor != "local":
                continue
            template = command_template(study, host)
            if template is None:
                lacking = not (folder / MANIFEST).is_file()
            else:
                lacking = any("{data}" in e for e in template) and not folder.is_dir()
            if lacking:
                return (
                    f"stage {stage_id} needs the data folder {folder} ([runner] data = "
                    f"{data!r}), which is not prepared; prepare it first with `stagewise data "
                    f"prepare --out {folder}`; nothing was frozen or started"
                )
    return None


def timeout_seconds(
    study: Study, budget_seconds: float, measured_overhead: float | None = None
) -> float:
    """When a run counts as hung. A token or step budget (budget_seconds 0) has no wall-clock
    length to add grace to: its runs get UNTIMED_LIMIT_SECONDS unless `[runner] timeout_seconds`
    says otherwise."""
    if budget_seconds <= 0:
        configured = study.runner.get("timeout_seconds", UNTIMED_LIMIT_SECONDS)
        if (
            isinstance(configured, bool)
            or not isinstance(configured, int | float)
            or configured <= 0
        ):
            raise ExecutorError(
                f"runner.timeout_seconds must be a positive number, but got {configured!r}"
            )
        return float(configured)
    return budget_seconds + grace_seconds(study, budget_seconds, measured_overhead)


__all__ = [
    "EXECUTOR_KEYS",
    "build_argv",
    "command_template",
    "device_batch_size",
    "format_value",
    "grace_seconds",
    "measured_overhead",
    "missing_data",
    "placeholders",
    "run_env",
    "runner_values",
    "substitute",
    "supports_device_batch",
    "timeout_seconds",
]
