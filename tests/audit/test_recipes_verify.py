"""verify and the resolved recipes: the bundle holds them, every hash is recomputed, a result of
another recipe and a rewritten frozen recipe fail (paper06 replay: results imported, so each
run names the recipe the study gave its condition)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stagewise.audit.bundle import write_bundle, write_manifests
from stagewise.audit.verify import verify_bundle
from stagewise.ledger import canonical_json, sha256_text


@pytest.fixture(scope="module")
def bundle(paper06: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "B"
    write_bundle(paper06, out)
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "B"
    shutil.copytree(bundle, out)
    return out


def _write(path: Path, value: object) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def test_the_bundle_holds_every_recipe_and_verifies(bundle: Path) -> None:
    recipes = json.loads((bundle / "recipes" / "recipes.json").read_text())["recipes"]
    runs = json.loads((bundle / "results" / "runs.json").read_text())["runs"]
    named = {r["recipe_sha256"] for r in runs}
    assert named and named <= set(recipes)
    for sha, recipe in recipes.items():
        assert sha256_text(canonical_json(recipe)) == sha
    frozen = json.loads((bundle / "frozen" / "g12h.json").read_text())["records"][-1]
    content = json.loads(frozen["canonical"])
    assert content["format"] == "stagewise-freeze/2"
    assert set(content["recipes"]) == set(content["frozen"]["recipes"])
    report = verify_bundle(bundle, images=False)
    assert report.ok, report.problems


def test_a_result_carrying_another_recipes_hash_fails(bundle: Path, tmp_path: Path) -> None:
    """The forger points one result at another condition's recipe and rewrites the manifests."""
    out = _copy(bundle, tmp_path)
    runs_path = out / "results" / "runs.json"
    runs = json.loads(runs_path.read_text())
    other = next(r["recipe_sha256"] for r in runs["runs"] if r["condition_id"] == "p06_bridge_best")
    forged = next(r for r in runs["runs"] if r["condition_id"] == "p06_greedy_winner")
    forged["recipe_sha256"] = other
    _write(runs_path, runs)
    write_manifests(out)
    problems = verify_bundle(out, images=False).problems
    assert any(
        "trained a recipe other than the one frozen" in p and "p06_greedy_winner" in p
        for p in problems
    ), problems
    # the chain committed to the recipe each result trained, too
    assert any("differs from what event" in p for p in problems), problems


def test_a_rewritten_frozen_recipe_fails(bundle: Path, tmp_path: Path) -> None:
    """The forger rewrites a frozen recipe and re-hashes the record and the manifests."""
    out = _copy(bundle, tmp_path)
    path = out / "frozen" / "g12h.json"
    data = json.loads(path.read_text())
    record = data["records"][-1]
    content = json.loads(record["canonical"])
    content["recipes"]["p06_greedy_winner"]["matrix"]["matrix_lr"] = 0.07
    record["canonical"] = canonical_json(content)
    record["sha256"] = sha256_text(record["canonical"])
    data["current_sha256"] = record["sha256"]
    _write(path, data)
    write_manifests(out)
    problems = verify_bundle(out, images=False).problems
    assert any("does not hash to the frozen sha256" in p for p in problems), problems


def test_a_rewritten_run_recipe_fails(bundle: Path, tmp_path: Path) -> None:
    out = _copy(bundle, tmp_path)
    path = out / "recipes" / "recipes.json"
    data = json.loads(path.read_text())
    sha = sorted(data["recipes"])[0]
    data["recipes"][sha]["runner"]["eval_tokens"] = 1
    _write(path, data)
    write_manifests(out)
    problems = verify_bundle(out, images=False).problems
    assert any("(rewritten after it was recorded)" in p for p in problems), problems


def test_a_study_edited_after_the_freeze_fails(bundle: Path, tmp_path: Path) -> None:
    out = _copy(bundle, tmp_path)
    matrix = next((out / "study").glob("matrix.*"))
    text = matrix.read_text()
    line = next(x for x in text.splitlines() if x.split(",")[1:2] == ["p06_greedy_winner"])
    cells = line.split(",")
    header = text.splitlines()[0].split(",")
    i = header.index("total_batch_size")
    cells[i] = str(int(cells[i]) * 2)
    matrix.write_text(text.replace(line, ",".join(cells)))
    write_manifests(out)
    problems = verify_bundle(out, images=False).problems
    assert any("matrix.total_batch_size" in p and "p06_greedy_winner" in p for p in problems), (
        problems
    )
