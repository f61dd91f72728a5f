"""Load and validate a study folder (`study.toml` + the matrix it names).

Every check happens here, at the boundary, so that later layers work on trusted plain data.
Messages name the file, the key and what would have been valid.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, cast

from stagewise.budget_units import parse_duration
from stagewise.errors import StudyError
from stagewise.study.matrix import TEXT_PARAMS, load_matrix
from stagewise.study.model import Candidates, Gate, Host, Rule, Stage, Study

STUDY_FILE = "study.toml"
EXECUTORS = ("local", "ray", "external")
GATE_KINDS = ("promote", "confirm")
RULE_KEYS = ("rule", "reason", "conditions", "roles")


class _Ctx:
    """Carries the file name so every message can start with it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> StudyError:
        return StudyError(f"{self.path}: {key}: {message}")


def _table(ctx: _Ctx, data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise ctx.fail(f"[{key}]", "missing table")
        return {}
    if not isinstance(value, dict):
        raise ctx.fail(key, f"expected a table, but got {type(value).__name__}")
    return value


def _str(ctx: _Ctx, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ctx.fail(key, f"expected a non-empty string, but got {value!r}")
    return value.strip()


def _str_list(ctx: _Ctx, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ctx.fail(key, f"expected a list of strings, but got {value!r}")
    if len(set(value)) != len(value):
        raise ctx.fail(key, f"duplicate entries in {value!r}")
    return tuple(value)


def load_study(folder: Path | str) -> Study:
    """Read `folder/study.toml` and its matrix; raise StudyError on the first problem found."""
    root = Path(folder)
    path = root / STUDY_FILE
    if not root.is_dir():
        raise StudyError(f"{root}: not a study folder (directory not found)")
    if not path.is_file():
        raise StudyError(f"{path}: not found; create a study with `stagewise init {root}`")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: invalid TOML: {exc}") from None
    ctx = _Ctx(path)
    return _build(root.resolve(), ctx, raw)


def _build(root: Path, ctx: _Ctx, raw: dict[str, Any]) -> Study:
    study = _table(ctx, raw, "study", required=True)
    name = _str(ctx, "study.name", study.get("name"))
    matrix_file = _str(ctx, "study.matrix", study.get("matrix"))
    metric = _str(ctx, "study.metric", study.get("metric", "val_bpb"))
    matrix_path = root / matrix_file
    conditions = load_matrix(matrix_path)
    ids = {c.condition_id for c in conditions}
    reference = _str(ctx, "study.reference", study.get("reference"))
    if reference not in ids:
        raise ctx.fail("study.reference", f"{reference!r} is not a condition_id of {matrix_file}")

    runner = dict(_table(ctx, raw, "runner"))
    command: tuple[str, ...] | None = None
    if "command" in runner:
        command = _command(ctx, "runner.command", runner.pop("command"))
    for key, value in runner.items():
        if isinstance(value, bool) or key in TEXT_PARAMS or key in ("data", "out"):
            continue
        if isinstance(value, str) and key not in ("time_budget",):
            raise ctx.fail(f"runner.{key}", f"expected a number, but got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ctx.fail(f"runner.{key}", f"expected a finite number, but got {value!r}")

    hosts = {
        name_: _host(ctx, name_, table)
        for name_, table in _table(ctx, raw, "hosts", required=True).items()
    }
    if not hosts:
        raise ctx.fail("[hosts]", "declare at least one host block, e.g. [hosts.local]")

    stages_raw = _table(ctx, raw, "stages", required=True)
    if not stages_raw:
        raise ctx.fail("[stages]", "declare at least one stage, e.g. [stages.s1]")
    gates_raw = _table(ctx, raw, "gates")
    stages = {sid: _stage(ctx, sid, t, hosts, ids, gates_raw) for sid, t in stages_raw.items()}
    gates = {gid: _gate(ctx, gid, t, stages, ids, conditions) for gid, t in gates_raw.items()}
    _check_order(ctx, stages, gates)
    return Study(
        root=root,
        name=name,
        reference=reference,
        metric=metric,
        matrix_file=matrix_file,
        conditions=conditions,
        hosts=hosts,
        stages=stages,
        gates=gates,
        runner=runner,
        command=command,
        raw=raw,
    )


def _command(ctx: _Ctx, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ctx.fail(
            key, f'expected an argv list such as ["python", "train.py"], but got {value!r}'
        )
    return tuple(value)


def _host(ctx: _Ctx, name: str, table: Any) -> Host:
    key = f"hosts.{name}"
    if not isinstance(table, dict):
        raise ctx.fail(key, "expected a table")
    executor = table.get("executor", "local")
    if executor not in EXECUTORS:
        raise ctx.fail(
            f"{key}.executor", f"expected one of {', '.join(EXECUTORS)}, but got {executor!r}"
        )
    devices = _str_list(ctx, f"{key}.devices", table.get("devices", ["cpu"]))
    for dev in devices:
        if dev != "cpu" and not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ctx.fail(f"{key}.devices", f"expected 'cpu' or 'cuda:N', but got {dev!r}")
    workers = table.get("workers")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ctx.fail(f"{key}.workers", f"expected a positive integer, but got {workers!r}")
    resources = table.get("resources", {})
    if not isinstance(resources, dict) or not all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for k, v in resources.items()
    ):
        raise ctx.fail(
            f"{key}.resources", f"expected a table of positive numbers, but got {resources!r}"
        )
    address = table.get("address")
    if address is not None:
        address = _str(ctx, f"{key}.address", address)
    if executor == "ray" and address is None:
        address = "auto"
    nums: dict[str, float | None] = {}
    for num_key in ("num_cpus", "num_gpus"):
        value = table.get(num_key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value < 0
        ):
            raise ctx.fail(f"{key}.{num_key}", f"expected a non-negative number, but got {value!r}")
        nums[num_key] = float(value) if value is not None else None
    command = _command(ctx, f"{key}.command", table["command"]) if "command" in table else None
    known = {
        "executor",
        "devices",
        "workers",
        "resources",
        "address",
        "num_cpus",
        "num_gpus",
        "command",
    }
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
    )


def _stage(
    ctx: _Ctx,
    sid: str,
    table: Any,
    hosts: dict[str, Host],
    ids: set[str],
    gates_raw: dict[str, Any],
) -> Stage:
    key = f"stages.{sid}"
    if not isinstance(table, dict):
        raise ctx.fail(key, "expected a table")
    if "budget" not in table:
        raise ctx.fail(f"{key}.budget", "missing; give seconds or a string like '10m'")
    try:
        budget = parse_duration(table["budget"])
    except ValueError as exc:
        raise ctx.fail(f"{key}.budget", str(exc)) from None
    seeds = table.get("seeds")
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise ctx.fail(
            f"{key}.seeds", f"expected a non-empty list of non-negative integers, but got {seeds!r}"
        )
    if len(set(seeds)) != len(seeds):
        raise ctx.fail(f"{key}.seeds", f"duplicate seeds in {seeds!r}")
    stage_hosts = _str_list(ctx, f"{key}.hosts", table.get("hosts", list(hosts)))
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
        listed = _str_list(ctx, f"{key}.candidates", cand)
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
    return Stage(sid, budget, tuple(seeds), stage_hosts, candidates, str(purpose))


def _gate(
    ctx: _Ctx,
    gid: str,
    table: Any,
    stages: dict[str, Stage],
    ids: set[str],
    conditions: tuple[Any, ...],
) -> Gate:
    from stagewise.gates.registry import rule_specs

    key = f"gates.{gid}"
    if not isinstance(table, dict):
        raise ctx.fail(key, "expected a table")
    kind = table.get("kind", "promote")
    if kind not in GATE_KINDS:
        raise ctx.fail(f"{key}.kind", f"expected 'promote' or 'confirm', but got {kind!r}")
    pooled = _str_list(ctx, f"{key}.stages", table.get("stages"))
    if not pooled:
        raise ctx.fail(f"{key}.stages", "name at least one stage to pool")
    for sid in pooled:
        if sid not in stages:
            raise ctx.fail(f"{key}.stages", f"unknown stage {sid!r}; stages: {', '.join(stages)}")
    budgets = {stages[s].budget_seconds for s in pooled}
    if len(budgets) > 1:
        detail = ", ".join(f"{s}={stages[s].budget_seconds:g}s" for s in pooled)
        raise ctx.fail(f"{key}.stages", f"pooled stages must share one budget, but got {detail}")
    rules_raw = table.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise ctx.fail(f"{key}.rules", 'expected a non-empty list of { rule = "...", ... } tables')
    specs = rule_specs()
    roles = {c.role for c in conditions}
    rules = []
    for i, rule_raw in enumerate(rules_raw):
        rkey = f"{key}.rules[{i}]"
        if not isinstance(rule_raw, dict) or "rule" not in rule_raw:
            raise ctx.fail(rkey, "expected a table with a 'rule' key")
        name = rule_raw["rule"]
        if name not in specs:
            raise ctx.fail(
                f"{rkey}.rule", f"unknown rule {name!r}; known rules: {', '.join(sorted(specs))}"
            )
        spec = specs[name]
        params: dict[str, Any] = {}
        for pkey, value in rule_raw.items():
            if pkey in RULE_KEYS:
                continue
            expected = spec.required.get(pkey, spec.optional.get(pkey))
            if expected is None:
                allowed = sorted(set(spec.required) | set(spec.optional) | set(RULE_KEYS))
                raise ctx.fail(
                    f"{rkey}.{pkey}", f"not a parameter of {name}; allowed: {', '.join(allowed)}"
                )
            params[pkey] = _rule_param(ctx, f"{rkey}.{pkey}", expected, value)
        for pkey in spec.required:
            if pkey not in params:
                raise ctx.fail(f"{rkey}.{pkey}", f"missing; rule {name} needs {pkey}")
        targets = _str_list(ctx, f"{rkey}.conditions", rule_raw.get("conditions", []))
        for cid in targets:
            if cid not in ids:
                raise ctx.fail(f"{rkey}.conditions", f"unknown condition_id {cid!r}")
        target_roles = _str_list(ctx, f"{rkey}.roles", rule_raw.get("roles", []))
        for role in target_roles:
            if role not in roles:
                raise ctx.fail(
                    f"{rkey}.roles",
                    f"no condition has role {role!r}; roles: {', '.join(sorted(roles))}",
                )
        if name == "keep" and not (targets or target_roles):
            raise ctx.fail(rkey, "keep needs conditions = [...] or roles = [...]")
        reason = rule_raw.get("reason", "")
        if not isinstance(reason, str):
            raise ctx.fail(f"{rkey}.reason", f"expected a string, but got {reason!r}")
        rules.append(Rule(name, params, targets, target_roles, reason, dict(rule_raw)))
    decide = table.get("decide", "auto")
    if decide not in ("auto", "manual"):
        raise ctx.fail(f"{key}.decide", f"expected 'auto' or 'manual', but got {decide!r}")
    return Gate(
        gid,
        kind,
        pooled,
        tuple(rules),
        str(table.get("description", "")),
        dict(table),
        decide=decide,
    )


def _rule_param(ctx: _Ctx, key: str, expected: type, value: Any) -> Any:
    if isinstance(value, bool):
        raise ctx.fail(key, f"expected {expected.__name__}, but got {value!r}")
    if expected is int:
        if not isinstance(value, int) or value < 1:
            raise ctx.fail(key, f"expected a positive integer, but got {value!r}")
        return value
    if expected is float:
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ctx.fail(key, f"expected a non-negative number, but got {value!r}")
        return float(value)
    if not isinstance(value, expected):
        raise ctx.fail(key, f"expected {expected.__name__}, but got {value!r}")
    return value


def _check_order(ctx: _Ctx, stages: dict[str, Stage], gates: dict[str, Gate]) -> None:
    """Feeding must flow forward: no cycles, and a gate feeds only stages listed after its own."""
    # Graph: stage -> gates pooling it; gate -> stages it feeds.
    edges: dict[str, list[str]] = {f"s:{s}": [] for s in stages}
    edges.update({f"g:{g}": [] for g in gates})
    for gate in gates.values():
        for sid in gate.stages:
            edges[f"s:{sid}"].append(f"g:{gate.gate_id}")
    for stage in stages.values():
        if stage.candidates.gate:
            edges[f"g:{stage.candidates.gate}"].append(f"s:{stage.stage_id}")
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                names = " -> ".join(n[2:] for n in cycle)
                raise ctx.fail("stages/gates", f"cycle in candidate feeding: {names}")
            if state.get(nxt) is None:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node, [node])
    order = list(stages)
    for stage in stages.values():
        gid = stage.candidates.gate
        if gid is None:
            continue
        late = [s for s in gates[gid].stages if order.index(s) >= order.index(stage.stage_id)]
        if late:
            raise ctx.fail(
                f"stages.{stage.stage_id}.candidates",
                f"gate {gid} is not upstream: it pools {', '.join(late)}, which is not listed "
                f"before {stage.stage_id}",
            )
