"""Freezing a gate: its rules, the plan of its stages and the recipes they train, written down
before the stage runs.

The canonical form of a freeze is sorted-key JSON (`stagewise.ledger.canonical_json`) of

- `format`: `stagewise-freeze/2` (since recipes are frozen) or `stagewise-freeze/1` (older
  records: they still load, apply and verify, and read "recipes not frozen (format 1)");
- `frozen`: what may not change afterwards: the gate's table as parsed from study.toml, the
  study's reference and metric, the conditions each rule targets (so editing roles in the matrix
  counts as an edit), each pooled stage's budget, seeds, hosts and candidate specification, and
  (format 2) `recipes`: the sha256 of the resolved recipe of every condition the gate's stages
  may train (`executors/recipe.py`);
- `recipes` (format 2): those resolved recipes themselves, so a reader of the record alone can
  see, and recompute, what each hash stands for;
- `frozen_sha256`: the sha256 of `frozen` alone, compared on every later use;
- `plan`: the candidates each pooled stage has now (null while its feeding gate is undecided);
- `previous_sha256` (the ledger's previous freeze of any gate) and `amends` (this gate's
  previous freeze), so freezes form a chain on top of the ledger's hash-chained event log;
- `kind` ("freeze" | "amend") and `reason`.

The record's sha256 is that of the whole canonical text. Results already present in the gate's
stages are stored with it and the freeze is flagged post hoc.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stagewise.analysis.cells import ResultLike
from stagewise.errors import FrozenRuleMismatch
from stagewise.executors.recipe import (
    Recipe,
    RecipeResolver,
    data_problem,
    recipe_changes,
    recipe_sha256,
    show_value,
)
from stagewise.gates.results import FreezeSummary, NotCounted
from stagewise.ledger import FreezeRecord, Ledger, canonical_json, sha256_text
from stagewise.plan import build_plan
from stagewise.study.model import Gate, Study

FORMAT = "stagewise-freeze/2"
FORMAT_1 = "stagewise-freeze/1"
NOT_FROZEN_V1 = "recipes not frozen (format 1)"


def _gate(study: Study, gate_id: str) -> Gate:
    if gate_id not in study.gates:
        raise FrozenRuleMismatch(
            f"unknown gate {gate_id!r} in {study.study_file}; gates: {', '.join(study.gates)}"
        )
    return study.gates[gate_id]


def frozen_definition(
    study: Study,
    gate_id: str,
    recipes: dict[str, Recipe] | None = None,
    *,
    executors: bool = True,
) -> dict[str, Any]:
    """The part of a gate that may not change once frozen; with `recipes` (format 2), the
    sha256 of each condition's resolved recipe too; with `executors`, the executor kind of each
    host block its stages run on (a block switched to `external` after the freeze could take
    made-up results). Records frozen before that key existed are compared without it
    (`executors=False`), so they keep their sha256."""
    from stagewise.gates.evaluate import rule_targets

    gate = _gate(study, gate_id)
    stages_raw = study.raw.get("stages", {})
    recipe_part = (
        {"recipes": {cid: r.sha256 for cid, r in sorted(recipes.items())}}
        if recipes is not None
        else {}
    )
    hosts = sorted({h for sid in gate.stages for h in study.stages[sid].hosts})
    executor_part = (
        {"executors": {h: str(study.hosts[h].executor) for h in hosts}} if executors else {}
    )
    return {
        **recipe_part,
        **executor_part,
        "gate": gate_id,
        "definition": gate.raw,
        "reference": study.reference,
        "metric": study.metric,
        "targets": [
            sorted(rule_targets(rule, study, study.condition_ids)) if rule.targeted else "all"
            for rule in gate.rules
        ],
        "stages": [
            {
                "stage": sid,
                "budget_seconds": study.stages[sid].budget_seconds,
                # Only token/step budgets add a key, so existing freezes keep their sha256.
                **(
                    {"budget": str(study.stages[sid].budget)}
                    if study.stages[sid].budget_spec
                    else {}
                ),
                "seeds": list(study.stages[sid].seeds),
                "hosts": list(study.stages[sid].hosts),
                "candidates": stages_raw.get(sid, {}).get("candidates", "all"),
            }
            for sid in gate.stages
        ],
    }


def recipe_conditions(study: Study, plan: dict[str, list[str] | None]) -> list[str]:
    """The conditions the gate's stages may train: their candidates, or every condition of the
    study while a stage's candidates wait on an undecided gate."""
    found: set[str] = set()
    for cands in plan.values():
        found |= set(study.condition_ids if cands is None else cands)
    return [cid for cid in study.condition_ids if cid in found]


Candidates = Mapping[str, tuple[str, ...] | None]


def _stage_plan(study: Study, candidates: Candidates, gate_id: str) -> dict[str, list[str] | None]:
    """The candidates each pooled stage has now (the `plan` part of a freeze record)."""
    return {
        sid: (None if candidates[sid] is None else list(candidates[sid] or ()))
        for sid in _gate(study, gate_id).stages
    }


def _results(study: Study, ledger: Ledger, gate_id: str) -> list[dict[str, Any]]:
    rows = []
    for sid in _gate(study, gate_id).stages:
        for run in ledger.runs(stage=sid):
            if run.status == "succeeded":
                row: dict[str, Any] = {
                    "stage": run.stage,
                    "condition_id": run.condition_id,
                    "seed": run.seed,
                    "host": run.host,
                    "val_bpb": run.val_bpb,
                }
                if run.recipe_sha256 is not None:
                    row["recipe_sha256"] = run.recipe_sha256
                rows.append(row)
    return rows


def parse(record: FreezeRecord) -> dict[str, Any]:
    value = json.loads(record.canonical)
    return value if isinstance(value, dict) else {}


def record_format(record: FreezeRecord) -> str:
    return str(parse(record).get("format") or FORMAT_1)


def frozen_recipes(record: FreezeRecord) -> dict[str, dict[str, Any]] | None:
    """condition -> the resolved recipe the record froze; None for a format-1 record."""
    content = parse(record)
    if content.get("format") != FORMAT:
        return None
    recipes = content.get("recipes")
    return dict(recipes) if isinstance(recipes, dict) else {}


def recipe_problems(record: FreezeRecord) -> list[str]:
    """A format-2 record whose stored recipes do not hash to the sha256 it froze (rewritten)."""
    content = parse(record)
    if content.get("format") != FORMAT:
        return []
    stored = frozen_recipes(record) or {}
    hashes = (content.get("frozen") or {}).get("recipes") or {}
    problems = []
    for cid in sorted(set(stored) | set(hashes)):
        if cid not in stored or cid not in hashes:
            problems.append(f"freeze {record.gate} #{record.id}: recipe of {cid} is not stored")
        elif recipe_sha256(stored[cid]) != hashes[cid]:
            problems.append(
                f"freeze {record.gate} #{record.id}: the stored recipe of {cid} does not hash to "
                f"the frozen sha256 {str(hashes[cid])[:12]} (rewritten after the freeze)"
            )
    return problems


def describe_recipe_changes(
    frozen: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]], study: Study
) -> list[str]:
    """One text per change, the same field change of several conditions named once."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    texts: list[str] = []
    for cid, recipe in current.items():
        if cid not in frozen:
            texts.append(f"condition {cid}: no frozen recipe (added after the freeze)")
            continue
        for field_name, old, new in recipe_changes(frozen[cid], recipe):
            grouped.setdefault((field_name, show_value(old), show_value(new)), []).append(cid)
    for cid in frozen:
        if cid not in study.condition_ids:
            texts.append(f"condition {cid}: removed from the matrix")
    for (field_name, old, new), cids in grouped.items():
        who = f"condition {cids[0]}" if len(cids) == 1 else f"conditions {', '.join(cids)}"
        texts.append(f"{who}: {field_name}: {old} -> {new}")
    return texts


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub} added")
            elif key not in new:
                out.append(f"{sub} removed")
            else:
                out += _diff(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += _diff(a, b, f"{path}[{i}]")
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


@dataclass(frozen=True)
class FreezeOutcome:
    record: FreezeRecord
    created: bool  # False: the gate was already frozen as it stands (nothing recorded)
    warnings: tuple[str, ...] = ()  # what the freeze-time checks noticed (never blocking)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gate": self.record.gate,
            "kind": self.record.kind,
            "sha256": self.record.sha256,
            "frozen_sha256": parse(self.record).get("frozen_sha256"),
            "frozen_at": self.record.frozen_at,
            "post_hoc": self.record.post_hoc,
            "reason": self.record.reason,
            "results_at_freeze": len(self.record.results_at_freeze),
            "created": self.created,
            "format": record_format(self.record),
            "recipes": recipes_summary(self.record),
            "warnings": list(self.warnings),
        }


def recipes_summary(record: FreezeRecord) -> dict[str, str] | str:
    """condition -> recipe sha256 as frozen, or "recipes not frozen (format 1)"."""
    recipes = frozen_recipes(record)
    if recipes is None:
        return NOT_FROZEN_V1
    return {cid: recipe_sha256(r) for cid, r in sorted(recipes.items())}


def study_part(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """What the study files alone say of a recipe: matrix, [runner], commands, metric name
    (the data, the trainer's source and program files live on the machine that trains)."""
    return {
        "matrix": recipe.get("matrix"),
        "runner": recipe.get("runner"),
        "trainer": {"commands": (recipe.get("trainer") or {}).get("commands")},
        "metric": {"name": (recipe.get("metric") or {}).get("name")},
    }


MASKED_PATH = "<path>/"  # how a bundle shows an absolute path of the study files (ledger/masking)


def _as_masked(frozen: Any, shown: Any) -> Any:
    """`frozen` with each path the bundled study files show masked (`<path>/name`) put in that
    form where its file name agrees: a bundle cannot show where the machine kept a file, only
    its name, so a masked path is compared by name (the frozen recipe's own hash, checked
    against the chain, still covers the full value)."""
    if isinstance(frozen, dict) and isinstance(shown, dict):
        return {k: _as_masked(v, shown.get(k)) for k, v in frozen.items()}
    if isinstance(frozen, list | tuple) and isinstance(shown, list | tuple):
        if len(frozen) != len(shown):
            return list(frozen)
        return [_as_masked(f, c) for f, c in zip(frozen, shown, strict=True)]
    if (
        isinstance(frozen, str)
        and isinstance(shown, str)
        and shown.startswith(MASKED_PATH)
        and frozen.replace("\\", "/").rsplit("/", 1)[-1] == shown[len(MASKED_PATH) :]
    ):
        return shown
    return frozen


def recipe_edits(
    study: Study, record: FreezeRecord, now: dict[str, list[str] | None], *, files_only: bool
) -> list[str]:
    """How the study's recipes differ from those the record froze ([] for format 1).

    `files_only`: compare only what the study files say (`study_part`), as `verify` does on a
    bundle, which holds neither the data nor the trainer the study ran with.
    """
    frozen = frozen_recipes(record)
    if frozen is None:
        return []
    # The recipes frozen (while their conditions exist) and any the stages gained since.
    wanted = set(recipe_conditions(study, now)) | (set(frozen) & set(study.condition_ids))
    resolved = RecipeResolver(study).recipes(c for c in study.condition_ids if c in wanted)
    current = {cid: r.to_json() for cid, r in resolved.items()}
    if files_only:
        current = {cid: study_part(r) for cid, r in current.items()}
        frozen = {cid: _as_masked(study_part(r), current.get(cid)) for cid, r in frozen.items()}
    edits = describe_recipe_changes(frozen, current, study)
    if not edits and not files_only:
        hashes = (parse(record).get("frozen") or {}).get("recipes") or {}
        if any(hashes.get(cid) != resolved[cid].sha256 for cid in resolved if cid in hashes):
            edits = ["the frozen recipes differ from the recipes they record (rewritten)"]
    return edits


def changes_since_freeze(study: Study, ledger: Ledger, gate_id: str) -> list[str]:
    """What differs between the gate as it stands and its last freeze (empty: unchanged)."""
    return changes_against(
        study,
        gate_id,
        ledger.current_freeze(gate_id),
        build_plan(study, ledger).candidates,
        files_only=ledger.rebuilt,
    )


def changes_against(
    study: Study,
    gate_id: str,
    record: FreezeRecord | None,
    candidates: Candidates,
    *,
    files_only: bool = False,
) -> list[str]:
    """What differs between the gate as it stands, with the plan's `candidates`, and its freeze
    `record` (the gate's current one); ["never frozen"] without one. `files_only`: recipes are
    compared by what the study files say (a ledger rebuilt from a bundle, `verify`)."""
    if record is None:
        return ["never frozen"]
    stored = parse(record)
    now = _stage_plan(study, candidates, gate_id)
    old_rules = {k: v for k, v in stored.get("frozen", {}).items() if k != "recipes"}
    new_rules = frozen_definition(study, gate_id, executors="executors" in old_rules)
    changes: list[str] = []
    if canonical_json(old_rules) != canonical_json(new_rules):
        changes = _diff(old_rules, new_rules) or ["the frozen definition differs"]
    changes += recipe_edits(study, record, now, files_only=files_only)
    known = stored.get("plan", {})
    for sid, cands in known.items():
        if (
            cands is not None
            and now.get(sid) is not None
            and sorted(cands) != sorted(now[sid] or [])
        ):
            changes.append(f"candidates of {sid}: {cands} -> {now[sid]}")
    return changes


def freeze(
    study: Study,
    ledger: Ledger,
    gate_id: str,
    reason: str | None = None,
    amend: bool = False,
) -> FreezeOutcome:
    """Freeze a gate (or amend its freeze). Refreezing an unchanged gate records nothing."""
    _gate(study, gate_id)
    current = ledger.current_freeze(gate_id)
    where = f"`stagewise freeze {study.root} {gate_id} --amend --reason ...`"
    plan = _stage_plan(study, build_plan(study, ledger).candidates, gate_id)
    warnings = tuple(freeze_warnings(study, gate_id, plan))
    if amend:
        if current is None:
            raise FrozenRuleMismatch(
                f"gate {gate_id} was never frozen, so there is nothing to amend; "
                f"freeze it with `stagewise freeze {study.root} {gate_id}`"
            )
        if not (reason or "").strip():
            raise FrozenRuleMismatch(f"an amendment of gate {gate_id} needs a reason: {where}")
    elif current is not None:
        changes = changes_since_freeze(study, ledger, gate_id)
        if not changes:
            return FreezeOutcome(current, created=False, warnings=warnings)
        raise FrozenRuleMismatch(
            f"gate {gate_id} was frozen at {current.frozen_at} (sha256 {current.sha256[:12]}) and "
            f"has changed since ({'; '.join(changes)}); record the change as an amendment: {where}"
        )
    require_data(study, gate_id)
    recipes = RecipeResolver(study).recipes(recipe_conditions(study, plan))
    definition = frozen_definition(study, gate_id, recipes)
    previous = ledger.freezes()
    results = _results(study, ledger, gate_id)
    clean_reason = reason.strip() if reason else None
    content: dict[str, Any] = {
        "format": FORMAT,
        "gate": gate_id,
        "kind": "amend" if amend else "freeze",
        "reason": clean_reason,
        "frozen": definition,
        "frozen_sha256": sha256_text(canonical_json(definition)),
        "plan": plan,
        "recipes": {cid: r.to_json() for cid, r in recipes.items()},
        "previous_sha256": previous[-1].sha256 if previous else None,
        "amends": current.sha256 if current is not None else None,
    }
    text = canonical_json(content)
    record = ledger.record_freeze(
        gate_id,
        "amend" if amend else "freeze",
        sha256_text(text),
        text,
        post_hoc=bool(results),
        reason=clean_reason,
        results_at_freeze=results,
    )
    return FreezeOutcome(record, created=True, warnings=warnings)


def needs_data(study: Study, gate_id: str) -> bool:
    """Whether a stage of the gate trains with stagewise's runner on a host the tool drives."""
    from stagewise.executors.command import command_template

    for sid in _gate(study, gate_id).stages:
        for name in study.stages[sid].hosts:
            host = study.hosts[name]
            if host.executor != "external" and command_template(study, host) is None:
                return True
    return False


def require_data(study: Study, gate_id: str) -> None:
    """Refuse to freeze a gate whose stages will train on data that is not there."""
    from stagewise.errors import DataError

    if not needs_data(study, gate_id):
        return
    problem = data_problem(study)
    if problem is not None:
        raise DataError(f"gate {gate_id} cannot be frozen: {problem}")


def freeze_warnings(study: Study, gate_id: str, plan: dict[str, list[str] | None]) -> list[str]:
    """What a freeze records anyway but a user should know: a confirm gate that tests nothing."""
    from stagewise.gates.evaluate import describe_rule, rule_targets

    gate = _gate(study, gate_id)
    if gate.kind != "confirm":
        return []
    among = recipe_conditions(study, plan)
    out = []
    tested: set[str] = set()
    for i, rule in enumerate(gate.rules):
        targets = rule_targets(rule, study, among)
        tested |= set(targets)
        if rule.targeted and not targets:
            out.append(
                f"confirm gate {gate_id}: rule {i + 1} ({describe_rule(rule)}) targets no "
                f"condition of its stages ({', '.join(among) or 'none'})"
            )
    if not tested:
        out.append(
            f"confirm gate {gate_id}: its rules test no condition, so every condition of "
            f"{', '.join(gate.stages)} would be 'untested'; name the conditions or roles to "
            f"confirm in its rules"
        )
    return out


def require_frozen(study: Study, ledger: Ledger, gate_id: str) -> FreezeRecord:
    """The gate's last freeze, provided the gate still reads exactly as frozen."""
    _gate(study, gate_id)
    record = ledger.current_freeze(gate_id)
    candidates = build_plan(study, ledger).candidates if record else {}
    return frozen_as_written(study, gate_id, record, candidates, files_only=ledger.rebuilt)


def frozen_as_written(
    study: Study,
    gate_id: str,
    record: FreezeRecord | None,
    candidates: Candidates,
    *,
    files_only: bool = False,
) -> FreezeRecord:
    """`record` (the gate's current freeze), provided the gate still reads exactly as frozen
    with the plan's `candidates`; FrozenRuleMismatch saying what to do otherwise."""
    _gate(study, gate_id)
    if record is None:
        raise FrozenRuleMismatch(
            f"gate {gate_id} is not frozen; freeze it before its stage runs: "
            f"`stagewise freeze {study.root} {gate_id}`"
        )
    changes = changes_against(study, gate_id, record, candidates, files_only=files_only)
    if changes:
        raise FrozenRuleMismatch(
            f"gate {gate_id} in {study.study_file} no longer matches its freeze of "
            f"{record.frozen_at} (sha256 {record.sha256[:12]}): {'; '.join(changes)}; "
            f"record the change as an amendment with "
            f"`stagewise freeze {study.root} {gate_id} --amend --reason ...`"
        )
    return record


@dataclass(frozen=True)
class RecipeSplit:
    """The gate's results split by the recipe they trained against the gate's current freeze."""

    counted: tuple[ResultLike, ...]
    superseded: tuple[NotCounted, ...]  # trained a recipe an amendment has replaced
    foreign: tuple[NotCounted, ...]  # trained a recipe no freeze of the gate holds


def split_by_recipe(
    gate: Gate, freezes: Sequence[FreezeRecord], runs: Iterable[ResultLike]
) -> RecipeSplit:
    """Which results a gate counts: only those whose recipe sha256 equals the one its current
    freeze holds for their condition (pure: the ledger and `verify` feed it their records).

    Under a format-1 freeze every result counts (recipes were not frozen). A result recorded
    before runs recorded their recipe (no sha256) counts: nothing says what it trained.
    """
    current = freezes[-1] if freezes else None
    frozen = frozen_recipes(current) if current is not None else None
    if frozen is None:
        return RecipeSplit(tuple(runs), (), ())
    hashes = {cid: recipe_sha256(r) for cid, r in frozen.items()}
    earlier: dict[tuple[str, str], FreezeRecord] = {}
    for record in freezes[:-1]:
        for cid, recipe in (frozen_recipes(record) or {}).items():
            earlier[(cid, recipe_sha256(recipe))] = record
    counted: list[ResultLike] = []
    superseded: list[NotCounted] = []
    foreign: list[NotCounted] = []
    stages = set(gate.stages)
    for run in runs:
        sha = getattr(run, "recipe_sha256", None)  # run records; bundle rows carry it too
        name = f"{run.stage}/{run.condition_id}/seed{run.seed}/{run.host}"
        if (
            run.stage not in stages
            or sha is None
            or run.condition_id not in hashes
            or sha == hashes[run.condition_id]
        ):
            counted.append(run)
            continue
        old = earlier.get((run.condition_id, sha))
        if old is not None:
            superseded.append(
                NotCounted(
                    name,
                    run.condition_id,
                    sha,
                    f"trained the recipe frozen at {old.frozen_at}, replaced by the amendment "
                    f"of {current.frozen_at if current else '-'}",
                )
            )
        else:
            foreign.append(NotCounted(name, run.condition_id, sha, "trained a recipe never frozen"))
    return RecipeSplit(tuple(counted), tuple(superseded), tuple(foreign))


def foreign_recipe_error(
    gate_id: str,
    split: RecipeSplit,
    current: FreezeRecord,
    recipe_texts: dict[str, str],
) -> FrozenRuleMismatch:
    """The one-line refusal for a result whose recipe differs from the frozen one."""
    bad = split.foreign[0]
    frozen = (frozen_recipes(current) or {}).get(bad.condition_id, {})
    trained = recipe_texts.get(bad.recipe_sha256)
    if trained is None:
        what = f"its recipe {bad.recipe_sha256[:12]} is not in the ledger"
    else:
        changes = recipe_changes(frozen, json.loads(trained))
        what = (
            "; ".join(
                f"{name}: {show_value(old)} -> {show_value(new)}" for name, old, new in changes[:3]
            )
            or "the recipe differs"
        )
    more = f" (and {len(split.foreign) - 1} more results)" if len(split.foreign) > 1 else ""
    return FrozenRuleMismatch(
        f"gate {gate_id}: result {bad.run} of condition {bad.condition_id} trained a recipe "
        f"other than the one frozen at {current.frozen_at}: {what}{more}; only results of the "
        f"frozen recipe count (rerun them, or record the change with "
        f"`stagewise freeze ... {gate_id} --amend --reason ...` first)"
    )


def summary(record: FreezeRecord) -> FreezeSummary:
    """A freeze record as a gate's result and history show it."""
    sha = parse(record).get("frozen_sha256")
    return FreezeSummary.of(record, sha if isinstance(sha, str) else None, recipes_summary(record))


def amendment_history(ledger: Ledger, gate_id: str) -> tuple[FreezeSummary, ...]:
    """Every freeze and amendment of the gate, oldest first."""
    return freeze_history(ledger.freezes(gate_id))


def freeze_history(records: Iterable[FreezeRecord]) -> tuple[FreezeSummary, ...]:
    return tuple(summary(r) for r in records)
