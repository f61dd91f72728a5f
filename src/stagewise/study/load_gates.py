"""[gates.<id>]: a gate's kind, pooled stages and rules; and the order gates feed stages in.

A rule's parameters and their types come from `study/rule_params.py`, so a plug-in rule is
checked here like a built-in one.
"""

from __future__ import annotations

import math
from typing import Any

from stagewise.study.model import Gate, Rule, Stage
from stagewise.study.rule_params import rule_params
from stagewise.study.toml_fields import TomlContext, str_list

GATE_KINDS = ("promote", "confirm")
# Keys of a rule table besides its parameters.
RULE_KEYS = ("rule", "reason", "conditions", "roles")
# Keys a [gates.<id>] table may hold; any other is a typo, refused with the nearest valid one.
GATE_KEYS = ("kind", "stages", "rules", "description", "decide")


def parse_gate(
    ctx: TomlContext,
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
    pooled = str_list(ctx, f"{key}.stages", table.get("stages"))
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
        targets = str_list(
            ctx,
            f"{rkey}.conditions",
            rule_raw.get("conditions", []),
            allow_empty="conditions" not in rule_raw,
        )
        for cid in targets:
            if cid not in ids:
                raise ctx.fail(f"{rkey}.conditions", f"unknown condition_id {cid!r}")
        target_roles = str_list(
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


def _rule_param(ctx: TomlContext, key: str, expected: type, value: Any) -> Any:
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


def check_order(ctx: TomlContext, stages: dict[str, Stage], gates: dict[str, Gate]) -> None:
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
