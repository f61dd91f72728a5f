"""[hosts.<name>]: where runs go (executor, devices, workers, resources, Ray address, command,
and a Slurm block's partition and job settings: study/slurm_options.py)."""

from __future__ import annotations

from typing import Any, cast

from stagewise import bounds
from stagewise.study.model import Host
from stagewise.study.slurm_options import SLURM_KEYS, parse_slurm_options, refuse_slurm_keys
from stagewise.study.toml_fields import TomlContext, argv_list, non_empty_str, str_list

EXECUTORS = ("local", "ray", "slurm", "external")
# Keys a [hosts.<name>] table may hold; any other is a typo, refused with the nearest valid one.
HOST_KEYS = (
    "executor",
    "devices",
    "workers",
    "resources",
    "address",
    "num_cpus",
    "num_gpus",
    "command",
    "max_retries",
    "scheduler_timeout_seconds",
    "node_wait_seconds",
    *SLURM_KEYS,
)


def parse_host(ctx: TomlContext, name: str, table: Any) -> Host:
    key = f"hosts.{name}"
    if not isinstance(table, dict):
        raise ctx.fail(key, "expected a table")
    ctx.known_keys(f"{key}.", table, HOST_KEYS)
    executor = table.get("executor", "local")
    if executor not in EXECUTORS:
        raise ctx.fail(
            f"{key}.executor", f"expected one of {', '.join(EXECUTORS)}, but got {executor!r}"
        )
    if executor == "slurm":
        slurm = parse_slurm_options(ctx, name, table)
    else:
        slurm = None
        refuse_slurm_keys(ctx, name, executor, table)
    devices = str_list(ctx, f"{key}.devices", table.get("devices", ["cpu"]))
    for dev in devices:
        if dev != "cpu" and not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ctx.fail(f"{key}.devices", f"expected 'cpu' or 'cuda:N', but got {dev!r}")
    workers = table.get("workers")
    if workers is not None and (
        isinstance(workers, bool)
        or not isinstance(workers, int)
        or not 1 <= workers <= bounds.MAX_WORKERS
    ):
        raise ctx.fail(
            f"{key}.workers", f"expected an integer in 1..{bounds.MAX_WORKERS}, but got {workers!r}"
        )
    resources = table.get("resources", {})
    if not isinstance(resources, dict) or not all(
        isinstance(k, str)
        and bounds.number_problem(v, low=0, high=bounds.INT64_MAX) is None
        and v > 0
        for k, v in resources.items()
    ):
        raise ctx.fail(
            f"{key}.resources", f"expected a table of positive numbers, but got {resources!r}"
        )
    address = table.get("address")
    if address is not None:
        address = non_empty_str(ctx, f"{key}.address", address)
    if executor == "ray" and address is None:
        address = "auto"
    nums: dict[str, float | None] = {}
    for num_key in ("num_cpus", "num_gpus"):
        value = table.get(num_key)
        if value is not None:
            problem = bounds.number_problem(value, low=0, high=bounds.INT64_MAX)
            if problem is not None:
                raise ctx.fail(f"{key}.{num_key}", problem)
        nums[num_key] = float(value) if value is not None else None
    command = argv_list(ctx, f"{key}.command", table["command"]) if "command" in table else None
    for seconds_key in ("scheduler_timeout_seconds", "node_wait_seconds"):
        if seconds_key in table:
            value = table[seconds_key]
            problem = bounds.number_problem(value, low=0, high=bounds.INT64_MAX)
            if problem is not None or not value > 0:
                raise ctx.fail(
                    f"{key}.{seconds_key}",
                    problem or f"expected a positive number of seconds, but got {value!r}",
                )
    # What is left is the executor's own options (read by executors/base.py and the executor).
    known = (
        set(HOST_KEYS) - {"max_retries", "scheduler_timeout_seconds", "node_wait_seconds"}
    ) | set(SLURM_KEYS)  # the Slurm keys are typed in `slurm`
    return Host(
        name=name,
        executor=cast(Any, executor),
        devices=devices,
        workers=workers,
        address=address,
        resources={k: float(v) for k, v in resources.items()},
        num_cpus=nums["num_cpus"],
        num_gpus=nums["num_gpus"],
        command=command,
        options={k: v for k, v in table.items() if k not in known},
        slurm=slurm,
    )
