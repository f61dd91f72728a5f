"""`verify`'s check of the recipes: every recipe hash recomputed, every result's recipe frozen.

A bundle holds the resolved recipes twice over: each format-2 freeze record stores the recipes
it froze (`frozen/<gate>.json`), and `recipes/recipes.json` holds the text of every recipe a run
recorded (from the ledger's `recipes` table). This check

- recomputes the sha256 of every bundled recipe (a recipe rewritten after the fact no longer
  hashes to the sha256 its freeze or its runs name);
- compares what the bundled study files say of each frozen recipe (matrix, `[runner]`,
  commands, metric) with the freeze: the study was not edited after it (the data and the
  trainer's source live on the machine that trained, not in a bundle);
- fails a result whose recipe differs from the one frozen for its condition, unless an
  amendment replaced that recipe (then the result is listed as not counted, and the re-derived
  decision, which leaves it out, must match the bundled one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stagewise.audit.layout import FROZEN_DIR, RECIPES_JSON, STUDY_DIR, frozen_file
from stagewise.audit.verify_report import VerifyReport, load_json
from stagewise.errors import StagewiseError
from stagewise.executors.recipe import recipe_changes, recipe_sha256, show_value
from stagewise.gates.freeze import (
    frozen_recipes,
    parse,
    recipe_edits,
    recipe_problems,
    split_by_recipe,
)
from stagewise.ledger import FreezeRecord, RunRecord, sha256_text
from stagewise.study.model import Study


def load_recipes(bundle: Path, report: VerifyReport) -> dict[str, dict[str, Any]]:
    """sha256 -> recipe from recipes/recipes.json, each hash recomputed ({} when absent)."""
    path = bundle / RECIPES_JSON
    if not path.is_file():
        return {}
    data = load_json(path, report)
    recipes = data.get("recipes") if isinstance(data, dict) else None
    if not isinstance(recipes, dict):
        report.problems.append(f"{RECIPES_JSON}: expected an object with `recipes`")
        return {}
    out = {}
    for sha, recipe in recipes.items():
        if not isinstance(recipe, dict):
            report.problems.append(f"{RECIPES_JSON}: recipe {str(sha)[:12]} is not an object")
            continue
        try:
            actual = recipe_sha256(recipe)
        except (TypeError, ValueError) as exc:
            report.problems.append(f"{RECIPES_JSON}: recipe {str(sha)[:12]} unreadable ({exc})")
            continue
        if actual != sha:
            report.problems.append(
                f"{RECIPES_JSON}: the recipe filed under {str(sha)[:12]} hashes to {actual[:12]} "
                "(rewritten after it was recorded)"
            )
            continue
        out[str(sha)] = recipe
    return out


def check_recipes(
    bundle: Path,
    study: Study,
    runs: Sequence[RunRecord],
    freezes: Sequence[FreezeRecord],
    report: VerifyReport,
) -> None:
    known = load_recipes(bundle, report)
    by_gate: dict[str, list[FreezeRecord]] = {}
    for record in freezes:
        by_gate.setdefault(record.gate, []).append(record)
        where = frozen_file(record.gate)
        if sha256_text(record.canonical) != record.sha256:
            continue  # scrubbed or altered: check_frozen reports it; its recipes prove nothing
        for problem in recipe_problems(record):
            report.problems.append(f"{where}: {problem}")
        for recipe in (frozen_recipes(record) or {}).values():
            known.setdefault(recipe_sha256(recipe), recipe)
    for gate_id, records in by_gate.items():
        if gate_id not in study.gates:
            continue  # check_frozen names it
        current = records[-1]
        if frozen_recipes(current) is None:
            report.notes.append(f"{frozen_file(gate_id)}: recipes not frozen (format 1)")
            continue
        plan = parse(current).get("plan") or {}
        try:
            edits = recipe_edits(study, current, plan, files_only=True)
        except StagewiseError as exc:
            edits = [f"cannot resolve the recipes of the bundled study ({exc})"]
        for edit in edits:
            report.problems.append(
                f"{STUDY_DIR}/: gate {gate_id}: {edit} (the recipe frozen at "
                f"{current.frozen_at} says otherwise)"
            )
        split = split_by_recipe(study.gates[gate_id], records, runs)
        frozen = frozen_recipes(current) or {}
        for bad in split.foreign:
            trained = known.get(bad.recipe_sha256)
            if trained is None:
                what = f"recipe {bad.recipe_sha256[:12]} is in no bundled record"
            else:
                changes = recipe_changes(frozen.get(bad.condition_id, {}), trained)
                what = "; ".join(
                    f"{name}: {show_value(old)} -> {show_value(new)}"
                    for name, old, new in changes[:3]
                )
            report.problems.append(
                f"results: run {bad.run} of gate {gate_id} trained a recipe other than the one "
                f"frozen at {current.frozen_at} for {bad.condition_id} ({what})"
            )
        if split.superseded:
            report.notes.append(
                f"gate {gate_id}: {len(split.superseded)} result(s) of recipes replaced by an "
                "amendment are not counted"
            )
    for run in runs:
        if run.recipe_sha256 is not None and run.recipe_sha256 not in known:
            report.problems.append(
                f"results: run {run.key} names recipe {run.recipe_sha256[:12]}, which the bundle "
                f"does not hold ({RECIPES_JSON}, {FROZEN_DIR}/)"
            )


__all__ = ["check_recipes", "load_recipes"]
