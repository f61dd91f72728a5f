"""[stages.<id>]: a stage's budget, seeds, hosts and candidates (all, a list, or a gate's)."""

from __future__ import annotations

from typing import Any

from stagewise import bounds
from stagewise.budget_units import parse_budget
from stagewise.study.model import Candidates, Host, Stage
from stagewise.study.toml_fields import TomlContext, str_list

# Keys a [stages.<id>] table may hold; any other is a typo, refused with the nearest valid one.
STAGE_KEYS = ("budget", "seeds", "hosts", "candidates", "purpose", "description")


def parse_stage(
    ctx: TomlContext,
    sid: str,
    table: Any,
    hosts: dict[str, Host],
    ids: set[str],
    gates_raw: dict[str, Any],
) -> Stage:
    key = f"stages.{sid}"
    if not isinstance(table, dict):
        raise ctx.fail(key, "expected a table")
    ctx.known_keys(f"{key}.", table, STAGE_KEYS)
    if isinstance(table.get("budget"), str) and not table["budget"].isascii():
        # Python reads other scripts' digits as numbers ("١m" is one minute); a study must not.
        raise ctx.fail(
            f"{key}.budget", f"expected ASCII digits and a unit, but got {table['budget']!r}"
        )
    if "budget" not in table:
        raise ctx.fail(
            f"{key}.budget", "missing; give seconds or a string like '10m', '50Mtok', '2000steps'"
        )
    try:
        spec = parse_budget(table["budget"])
    except ValueError as exc:
        raise ctx.fail(f"{key}.budget", str(exc)) from None
    # A token or step budget has no wall-clock length: budget_seconds 0 says so.
    budget = spec.seconds or 0.0
    if budget > bounds.BUDGET_MAX_SECONDS:
        raise ctx.fail(
            f"{key}.budget",
            f"expected at most {bounds.BUDGET_MAX_SECONDS:.0f} seconds (a year), "
            f"but got {table['budget']!r}",
        )
    if spec.unit != "seconds" and spec.amount > bounds.INT64_MAX:
        raise ctx.fail(
            f"{key}.budget",
            f"expected at most {bounds.INT64_MAX} {spec.unit}, but got {table['budget']!r}",
        )
    seeds = table.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(bounds.seed_problem(s) is None for s in seeds)
    ):
        raise ctx.fail(
            f"{key}.seeds",
            f"expected a non-empty list of integers in 0..{bounds.SEED_MAX}, but got {seeds!r}",
        )
    if len(set(seeds)) != len(seeds):
        raise ctx.fail(f"{key}.seeds", f"duplicate seeds in {seeds!r}")
    stage_hosts = str_list(ctx, f"{key}.hosts", table.get("hosts", list(hosts)))
    for host in stage_hosts:
        if host not in hosts:
            raise ctx.fail(
                f"{key}.hosts", f"unknown host {host!r}; declared hosts: {', '.join(hosts)}"
            )
    cand = table.get("candidates", "all")
    candidates: Candidates
    if cand == "all":
        candidates = Candidates("all")
    elif isinstance(cand, list):
        listed = str_list(ctx, f"{key}.candidates", cand)
        for cid in listed:
            if cid not in ids:
                raise ctx.fail(f"{key}.candidates", f"unknown condition_id {cid!r}")
        candidates = Candidates("list", ids=listed)
    elif isinstance(cand, dict) and set(cand) == {"gate"} and isinstance(cand["gate"], str):
        if cand["gate"] not in gates_raw:
            raise ctx.fail(f"{key}.candidates.gate", f"unknown gate {cand['gate']!r}")
        candidates = Candidates("gate", gate=cand["gate"])
    else:
        raise ctx.fail(
            f"{key}.candidates",
            f'expected "all", a list of condition ids, or {{ gate = "<gate id>" }}, but got {cand!r}',
        )
    purpose = table.get("purpose", table.get("description", ""))
    return Stage(
        sid,
        budget,
        tuple(seeds),
        stage_hosts,
        candidates,
        str(purpose),
        budget_spec=None if spec.unit == "seconds" else spec,
    )
