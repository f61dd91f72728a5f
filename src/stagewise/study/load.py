"""Load and validate a study folder (`study.toml` + the matrix it names).

Every check happens here, at the boundary, so that later layers work on trusted plain data.
Messages name the file, the key and what would have been valid.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any, cast

from stagewise import bounds
from stagewise.budget_units import parse_budget
from stagewise.defaults import (
    DEVICE_BATCH_SIZE,
    EVAL_TOKENS,
    HEAD_DIM,
    SEQUENCE_LEN,
    VOCAB_SIZE,
)
from stagewise.errors import StudyError
from stagewise.paths import id_problem, safe_join
from stagewise.study.matrix import TEXT_PARAMS, load_matrix
from stagewise.study.model import Candidates, Condition, Gate, Host, Rule, Stage, Study
from stagewise.study.rule_params import rule_params

STUDY_FILE = "study.toml"
EXECUTORS = ("local", "ray", "external")
GATE_KINDS = ("promote", "confirm")
RULE_KEYS = ("rule", "reason", "conditions", "roles")
METRICS = ("val_bpb",)
# The keys each table may hold; anything else is a typo, refused with the nearest valid name.
TOP_KEYS = ("study", "runner", "hosts", "stages", "gates")
STUDY_KEYS = ("name", "matrix", "metric", "reference", "description")
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
)
STAGE_KEYS = ("budget", "seeds", "hosts", "candidates", "purpose", "description")
GATE_KEYS = ("kind", "stages", "rules", "description", "decide")


class _Ctx:
    """Carries the file name so every message can start with it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, message: str) -> StudyError:
        return StudyError(f"{self.path}: {key}: {message}")

    def known_keys(self, where: str, table: dict[str, Any], known: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                raise self.fail(f"{where}{key}", f"unknown key; {_nearest(key, known)}")

    def safe_id(self, key: str, value: str) -> str:
        problem = id_problem(value)
        if problem is not None:
            raise self.fail(key, problem)
        return value


def _nearest(key: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}valid keys: {', '.join(known)}"


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


def _str_list(ctx: _Ctx, key: str, value: Any, *, allow_empty: bool = False) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ctx.fail(key, f"expected a list of strings, but got {value!r}")
    if not value and not allow_empty:
        # An empty list would silently mean "all" or "none"; say which instead.
        raise ctx.fail(key, "expected at least one entry, but got []; leave the key out instead")
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
    ctx.known_keys("", raw, TOP_KEYS)
    study = _table(ctx, raw, "study", required=True)
    ctx.known_keys("study.", study, STUDY_KEYS)
    name = ctx.safe_id("study.name", _str(ctx, "study.name", study.get("name")))
    matrix_file = _str(ctx, "study.matrix", study.get("matrix"))
    metric = _str(ctx, "study.metric", study.get("metric", "val_bpb"))
    if metric not in METRICS:
        raise ctx.fail("study.metric", f"expected one of {', '.join(METRICS)}, but got {metric!r}")
    matrix_path = _matrix_path(ctx, root, matrix_file)
    conditions = load_matrix(matrix_path)
    ids = {c.condition_id for c in conditions}
    reference = _str(ctx, "study.reference", study.get("reference"))
    if reference not in ids:
        raise ctx.fail("study.reference", f"{reference!r} is not a condition_id of {matrix_file}")

    runner = dict(_table(ctx, raw, "runner"))
    command: tuple[str, ...] | None = None
    if "command" in runner:
        command = _command(ctx, "runner.command", runner.pop("command"))

    hosts_raw = _table(ctx, raw, "hosts", required=True)
    hosts = {ctx.safe_id(f"hosts.{n}", n): _host(ctx, n, t) for n, t in hosts_raw.items()}
    own_runner = command is None and any(h.command is None for h in hosts.values())
    _check_runner(ctx, runner, matrix_path, conditions, own_runner=own_runner)
    for template_key, template in [("runner.command", command)] + [
        (f"hosts.{h.name}.command", h.command) for h in hosts.values()
    ]:
        if template is not None:
            _check_template(ctx, template_key, template, runner, conditions)
    if not hosts:
        raise ctx.fail("[hosts]", "declare at least one host block, e.g. [hosts.local]")

    stages_raw = _table(ctx, raw, "stages", required=True)
    if not stages_raw:
        raise ctx.fail("[stages]", "declare at least one stage, e.g. [stages.s1]")
    gates_raw = _table(ctx, raw, "gates")
    for sid in stages_raw:
        ctx.safe_id(f"stages.{sid}", sid)
    for gid in gates_raw:
        ctx.safe_id(f"gates.{gid}", gid)
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


def _matrix_path(ctx: _Ctx, root: Path, matrix_file: str) -> Path:
    """The matrix lies inside the study folder: the bundle copies it to the same relative path."""
    try:
        return safe_join(root, matrix_file)
    except StudyError:
        raise ctx.fail(
            "study.matrix", f"expected a file inside the study folder, but got {matrix_file!r}"
        ) from None


def _check_runner(
    ctx: _Ctx,
    runner: dict[str, Any],
    matrix_path: Path,
    conditions: tuple[Condition, ...],
    *,
    own_runner: bool,
) -> None:
    """Runner options in [runner] and the matrix: known names (for our runner), sane values."""
    known = [*bounds.RUNNER_OPTIONS, *bounds.EXECUTOR_OPTIONS]
    for key, value in runner.items():
        if isinstance(value, dict | list):
            raise ctx.fail(
                f"runner.{key}", f"expected a number, string or boolean, but got {value!r}"
            )
        if own_runner and key not in known:
            raise ctx.fail(
                f"runner.{key}", f"not an option of `stagewise train`; {_nearest(key, known)}"
            )
        if key in TEXT_PARAMS and not isinstance(value, str):
            raise ctx.fail(f"runner.{key}", f"expected a string, but got {value!r}")
        problem = bounds.option_problem(key, value)
        if isinstance(value, float) and not math.isfinite(value):
            # A template's own value may be any scalar, but numbers must be finite.
            problem = problem or f"expected a finite number, but got {value!r}"
        if problem is not None:
            raise ctx.fail(f"runner.{key}", problem)
    for cond in conditions:
        where = f"{matrix_path}: condition {cond.condition_id}"
        for key, value in cond.params.items():
            if own_runner and key not in known:
                raise StudyError(
                    f"{where}: column {key!r} is not an option of `stagewise train`; "
                    f"{_nearest(key, known)}"
                )
            problem = bounds.option_problem(key, value)
            if problem is not None:
                raise StudyError(f"{where}: {key}: {problem}")
        merged = {**runner, **cond.params}
        if "depth" in merged and "aspect_ratio" in merged:
            problem = bounds.model_size_problem(
                merged["depth"],
                merged["aspect_ratio"],
                merged.get("head_dim", HEAD_DIM),
                merged.get("vocab_size", VOCAB_SIZE),
            )
            if problem is not None:
                raise StudyError(f"{where}: {problem}")
        if own_runner and "eval_batch_size" in merged:
            problem = bounds.eval_batch_problem(
                merged["eval_batch_size"],
                merged.get("eval_tokens", EVAL_TOKENS),
                merged.get("device_batch_size", DEVICE_BATCH_SIZE),
                merged.get("sequence_len", SEQUENCE_LEN),
            )
            if problem is not None:
                value = merged["eval_batch_size"]
                if "eval_batch_size" in cond.params:
                    raise StudyError(f"{where}: eval_batch_size={value} {problem}")
                raise ctx.fail("runner.eval_batch_size", f"{value} {problem}")


# Names every command template may use besides the runner options (executors/command.py's
# `placeholders`; tests/study/test_load.py keeps the two in step).
TEMPLATE_NAMES = frozenset(
    {
        "seed",
        "time_budget",
        "budget_seconds",
        "token_budget",
        "step_budget",
        "out",
        "out_dir",
        "summary",
        "condition_id",
        "label",
        "role",
        "stage",
        "host",
        "study",
        "python",
    }
)
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


def _check_template(
    ctx: _Ctx,
    key: str,
    template: tuple[str, ...],
    runner: dict[str, Any],
    conditions: tuple[Condition, ...],
) -> None:
    """Every `{name}` resolves for every condition and every brace is balanced, before any run."""
    for element in template:
        for match in _PLACEHOLDER.finditer(element):
            text, name = match.group(0), match.group(1)
            if text in ("{{", "}}"):
                continue
            if name is None:
                raise ctx.fail(
                    key,
                    f"element {element!r}: unbalanced brace; write {{{{ or }}}} for a literal brace",
                )
            if name in TEMPLATE_NAMES or name in runner:
                continue
            lacking = [c.condition_id for c in conditions if name not in c.params]
            if lacking:
                known = sorted(TEMPLATE_NAMES | set(runner))
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {{{close[0]}}}? " if close else ""
                raise ctx.fail(
                    key,
                    f"element {element!r}: unknown placeholder {{{name}}} (no [runner] key or "
                    f"matrix column for {lacking[0]}); {hint}known: {', '.join(known)}",
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
    ctx.known_keys(f"{key}.", table, HOST_KEYS)
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
        address = _str(ctx, f"{key}.address", address)
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
    return Stage(
        sid,
        budget,
        tuple(seeds),
        stage_hosts,
        candidates,
        str(purpose),
        budget_spec=None if spec.unit == "seconds" else spec,
    )


def _gate(
    ctx: _Ctx,
    gid: str,
    table: Any,
    stages: dict[str, Stage],
    ids: set[str],
    conditions: tuple[Any, ...],
) -> Gate:
    key = f"gates.{gid}"
    if not isinstance(table, dict):
        raise ctx.fail(key, "expected a table")
    ctx.known_keys(f"{key}.", table, GATE_KEYS)
    if "kind" not in table:
        raise ctx.fail(f"{key}.kind", "missing; expected 'promote' or 'confirm'")
    kind = table["kind"]
    if kind not in GATE_KINDS:
        raise ctx.fail(f"{key}.kind", f"expected 'promote' or 'confirm', but got {kind!r}")
    pooled = _str_list(ctx, f"{key}.stages", table.get("stages"))
    if not pooled:
        raise ctx.fail(f"{key}.stages", "name at least one stage to pool")
    for sid in pooled:
        if sid not in stages:
            raise ctx.fail(f"{key}.stages", f"unknown stage {sid!r}; stages: {', '.join(stages)}")
    budgets = {stages[s].budget for s in pooled}
    if len(budgets) > 1:
        detail = ", ".join(f"{s}={stages[s].budget}" for s in pooled)
        raise ctx.fail(f"{key}.stages", f"pooled stages must share one budget, but got {detail}")
    # The most candidates this gate can see: a listed stage's list, else the whole matrix.
    most = max(
        len(stages[s].candidates.ids) if stages[s].candidates.mode == "list" else len(conditions)
        for s in pooled
    )
    rules_raw = table.get("rules")
    if not isinstance(rules_raw, list) or not rules_raw:
        raise ctx.fail(f"{key}.rules", 'expected a non-empty list of { rule = "...", ... } tables')
    specs = rule_params()
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
        for pkey, value in params.items():
            if isinstance(value, int) and value > most:
                raise ctx.fail(
                    f"{rkey}.{pkey}",
                    f"expected at most {most} (the candidates gate {gid} can see), but got {value}",
                )
        targets = _str_list(
            ctx,
            f"{rkey}.conditions",
            rule_raw.get("conditions", []),
            allow_empty="conditions" not in rule_raw,
        )
        for cid in targets:
            if cid not in ids:
                raise ctx.fail(f"{rkey}.conditions", f"unknown condition_id {cid!r}")
        target_roles = _str_list(
            ctx, f"{rkey}.roles", rule_raw.get("roles", []), allow_empty="roles" not in rule_raw
        )
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
