"""`[hosts.<name>]` keys of an `executor = "slurm"` host block, checked when the study loads.

A Slurm host block is one kind of machine on a cluster: a partition (and often a node feature,
`constraint`, such as one GPU model), the resources one run asks for, and how its runs are
grouped into jobs. `executors/slurm.py` turns these into submitit's parameters; nothing here
talks to Slurm, so a typo is refused by `stagewise validate` on a laptop without one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from stagewise import bounds
from stagewise.budget_units import parse_duration
from stagewise.study.toml_fields import TomlContext

# What a Slurm host block may set besides `executor` (and `command`, `max_retries`).
SLURM_KEYS = (
    "partition",
    "account",
    "qos",
    "constraint",
    "gpus_per_node",
    "cpus_per_task",
    "mem_gb",
    "time_limit",
    "array_parallelism",
    "setup",
    "sbatch",
    "runs_per_job",
    "queue_wait_minutes",
)
# sbatch options stagewise itself writes for every job; `sbatch = {...}` may not replace them.
RESERVED_SBATCH = frozenset(
    {"array", "output", "error", "open-mode", "signal", "job-name", "wrap", "parsable"}
)
# The keys above that map to an sbatch option of their own: say which key to use instead.
SBATCH_KEY_FOR = {
    "partition": "partition",
    "p": "partition",
    "account": "account",
    "A": "account",
    "qos": "qos",
    "constraint": "constraint",
    "C": "constraint",
    "gpus-per-node": "gpus_per_node",
    "cpus-per-task": "cpus_per_task",
    "c": "cpus_per_task",
    "mem": "mem_gb",
    "time": "time_limit",
    "t": "time_limit",
}
MAX_RUNS_PER_JOB = 1000  # a job is one allocation; a thousand runs in a row is already a day
MAX_ARRAY_PARALLELISM = 100_000
DEFAULT_QUEUE_WAIT_MINUTES = 30.0  # after this long PENDING, a job is reported (not failed)
_NAME = re.compile(r"^[A-Za-z0-9_.:+\-]+$")  # partition, account, qos names
_SBATCH_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9\-_]*$")


@dataclass(frozen=True)
class SlurmOptions:
    """The validated Slurm settings of one host block (None: Slurm's own default)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_limit_minutes: int | None = None  # None: derived from the runs' budgets
    array_parallelism: int | None = None
    setup: tuple[str, ...] = ()
    sbatch: dict[str, str | int | float | bool] = field(default_factory=dict)
    runs_per_job: int = 1
    queue_wait_minutes: float = DEFAULT_QUEUE_WAIT_MINUTES


def _name(ctx: TomlContext, key: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ctx.fail(
            key, f"expected a Slurm name (letters, digits, _ . : + -), but got {value!r}"
        )
    return value


def _integer(ctx: TomlContext, key: str, value: Any, low: int, high: int) -> int:
    problem = bounds.number_problem(value, integer=True, low=low, high=high)
    if problem is not None:
        raise ctx.fail(key, problem)
    return int(value)


def _positive(ctx: TomlContext, key: str, value: Any) -> float:
    """A positive number (memory in GB, minutes of queue wait)."""
    problem = bounds.number_problem(value, low=0, high=1e6)
    if problem is not None or value <= 0:
        raise ctx.fail(key, problem or f"expected a positive number, but got {value!r}")
    return float(value)


def _minutes(ctx: TomlContext, key: str, value: Any) -> int:
    """Whole minutes (rounded up) from an integer of minutes or a string like '90m', '2h'."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ctx.fail(key, f"expected at least 1 minute, but got {value!r}")
        return value
    if isinstance(value, str) and value.strip()[-1:] in ("s", "m", "h", "d"):
        try:
            return max(1, math.ceil(parse_duration(value) / 60))
        except ValueError as exc:
            raise ctx.fail(key, str(exc)) from None
    raise ctx.fail(
        key,
        f"expected whole minutes (an integer) or a duration like '90m' or '2h', but got {value!r}",
    )


def _line(ctx: TomlContext, key: str, value: Any) -> str:
    if not isinstance(value, str) or "\n" in value or "\r" in value or not value.strip():
        raise ctx.fail(key, f"expected one non-empty line of text, but got {value!r}")
    return value


def _sbatch(ctx: TomlContext, key: str, table: Any) -> dict[str, str | int | float | bool]:
    if not isinstance(table, dict):
        raise ctx.fail(key, f"expected a table of sbatch options, but got {table!r}")
    out: dict[str, str | int | float | bool] = {}
    for name, value in table.items():
        where = f"{key}.{name}"
        if not _SBATCH_KEY.match(name):
            raise ctx.fail(where, "expected an sbatch long option name such as 'mail-type'")
        option = name.replace("_", "-")
        if option in RESERVED_SBATCH:
            raise ctx.fail(where, f"stagewise sets --{option} itself for every job")
        if option in SBATCH_KEY_FOR:
            raise ctx.fail(where, f"use the host key `{SBATCH_KEY_FOR[option]}` instead")
        if (
            isinstance(value, bool)
            or (isinstance(value, int | float) and math.isfinite(float(value)))
            or (isinstance(value, str) and "\n" not in value and "\r" not in value)
        ):
            out[option] = value
        else:
            raise ctx.fail(where, f"expected a string, number or true, but got {value!r}")
    return out


def parse_slurm_options(ctx: TomlContext, host: str, table: dict[str, Any]) -> SlurmOptions:
    """The Slurm keys of `[hosts.<host>]`, each checked, the bad one named in the error."""
    key = f"hosts.{host}"
    values: dict[str, Any] = {}
    for name in ("partition", "account", "qos"):
        if name in table:
            values[name] = _name(ctx, f"{key}.{name}", table[name])
    if "constraint" in table:
        values["constraint"] = _line(ctx, f"{key}.constraint", table["constraint"])
    if "gpus_per_node" in table:
        values["gpus_per_node"] = _integer(
            ctx, f"{key}.gpus_per_node", table["gpus_per_node"], 0, 64
        )
    if "cpus_per_task" in table:
        values["cpus_per_task"] = _integer(
            ctx, f"{key}.cpus_per_task", table["cpus_per_task"], 1, 4096
        )
    if "mem_gb" in table:
        values["mem_gb"] = _positive(ctx, f"{key}.mem_gb", table["mem_gb"])
    if "time_limit" in table:
        values["time_limit_minutes"] = _minutes(ctx, f"{key}.time_limit", table["time_limit"])
    if "array_parallelism" in table:
        values["array_parallelism"] = _integer(
            ctx, f"{key}.array_parallelism", table["array_parallelism"], 1, MAX_ARRAY_PARALLELISM
        )
    if "setup" in table:
        setup = table["setup"]
        if not isinstance(setup, list):
            raise ctx.fail(f"{key}.setup", f"expected a list of shell lines, but got {setup!r}")
        values["setup"] = tuple(_line(ctx, f"{key}.setup", line) for line in setup)
    if "sbatch" in table:
        values["sbatch"] = _sbatch(ctx, f"{key}.sbatch", table["sbatch"])
    if "runs_per_job" in table:
        values["runs_per_job"] = _integer(
            ctx, f"{key}.runs_per_job", table["runs_per_job"], 1, MAX_RUNS_PER_JOB
        )
    if "queue_wait_minutes" in table:
        values["queue_wait_minutes"] = _positive(
            ctx, f"{key}.queue_wait_minutes", table["queue_wait_minutes"]
        )
    return SlurmOptions(**values)


def refuse_slurm_keys(ctx: TomlContext, host: str, executor: str, table: dict[str, Any]) -> None:
    """A Slurm key on a host that is not a Slurm block is a mistake: say so, by name."""
    for name in SLURM_KEYS:
        if name in table:
            raise ctx.fail(
                f"hosts.{host}.{name}",
                f'only a Slurm host block takes {name} (executor = "slurm"), but this host has '
                f'executor = "{executor}"',
            )


__all__ = [
    "DEFAULT_QUEUE_WAIT_MINUTES",
    "SLURM_KEYS",
    "SlurmOptions",
    "parse_slurm_options",
    "refuse_slurm_keys",
]
