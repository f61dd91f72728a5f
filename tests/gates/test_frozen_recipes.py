"""A frozen gate freezes the recipes it judges: every edit kind after a freeze, the counting of
results by recipe, amendments, and the checks at freeze time (docs/gates.md, "What a freeze
covers")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from stagewise.errors import DataError, FrozenRuleMismatch
from stagewise.executors.recipe import resolve_recipes
from stagewise.executors.stage import run_stage
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import (
    FORMAT,
    changes_since_freeze,
    freeze,
    frozen_recipes,
    require_frozen,
)
from stagewise.ledger import Ledger, canonical_json, sha256_text
from stagewise.study import load_study
from tests.conftest import MATRIX, TINY_RUNNER, run_cli, write_study

LOCAL_STUDY = f"""\
[study]
name = "tiny"
reference = "c_a"
matrix = "matrix.csv"

{TINY_RUNNER.format(data="data")}
[hosts.block-a]
executor = "local"
devices = ["cpu"]
workers = 1

[stages.s1]
budget = "4s"
seeds = [1]
hosts = ["block-a"]
candidates = "all"

[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [{{ rule = "best_k", k = 1 }}]
"""

EXTERNAL_STUDY = LOCAL_STUDY.replace(
    'executor = "local"\ndevices = ["cpu"]\nworkers = 1', 'executor = "external"'
).replace("seeds = [1]", "seeds = [1, 2]")

OWN_TRAINER = LOCAL_STUDY.replace(
    'data = "data"\n',
    'data = "data"\ncommand = ["{python}", "train.py", "--lr", "{matrix_lr}", "--out", "{out}"]\n',
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sample data prepared once for the module (tokenizer + 5 shards, a few seconds)."""
    from stagewise.data.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "data"
    prepare("sample", out, vocab_size=1024)
    return out


def _study(tmp_path: Path, prepared: Path, text: str = LOCAL_STUDY, data: bool = True) -> Path:
    folder = write_study(tmp_path / "s", text)
    if data:
        shutil.copytree(prepared, folder / "data")
    return folder


def _freeze(folder: Path, gate: str = "g1") -> None:
    with Ledger.open(folder) as ledger:
        freeze(load_study(folder), ledger, gate)


def _refused(folder: Path, *naming: str) -> str:
    """gate and run both refuse, naming what changed; validate and status report it."""
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        with pytest.raises(FrozenRuleMismatch) as gate_err:
            apply_gate(study, ledger, "g1")
        with pytest.raises(FrozenRuleMismatch) as run_err:
            run_stage(study, ledger, "s1", frozen_check=require_frozen)
        assert ledger.decisions("g1") == [] and ledger.runs() == []  # nothing trained
    for message in (str(gate_err.value), str(run_err.value)):
        assert "frozen at" in message or "freeze of" in message
        for word in naming:
            assert word in message, message
    validate = run_cli("validate", folder)
    assert validate.returncode == 0 and "edited since its freeze" in validate.stdout
    status = run_cli("status", folder, "--json")
    assert status.returncode == 0
    (g,) = json.loads(status.stdout)["gates"]
    assert any(all(w in c for w in naming) for c in g["changed_since_freeze"]), g
    return str(gate_err.value)


def test_a_freeze_stores_the_recipes_themselves(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        record = ledger.current_freeze("g1")
        assert record is not None
        content = json.loads(record.canonical)
        assert content["format"] == FORMAT
        stored = frozen_recipes(record)
        assert stored is not None and sorted(stored) == ["c_a", "c_b", "c_c"]
        now = resolve_recipes(study)
        for cid, recipe in stored.items():
            # the record holds the resolved recipe and commits to its sha256
            assert recipe == now[cid].to_json()
            assert content["frozen"]["recipes"][cid] == sha256_text(canonical_json(recipe))
        b = stored["c_b"]
        assert b["matrix"] == {
            "label": "b",
            "role": "comparator",
            "depth": 2,
            "aspect_ratio": 48,
            "matrix_lr": 0.04,
            "total_batch_size": 4096,
        }
        assert b["runner"]["eval_tokens"] == 8192 and b["runner"]["data"] == "data"
        assert b["trainer"]["runner_source_sha256"] and b["trainer"]["stagewise_version"]
        assert b["metric"]["name"] == "val_bpb"
        data = b["data"]
        assert data["validation"]["shard"] == "shard_00004.parquet"
        assert sorted(data["shards"]) == [f"shard_0000{i}.parquet" for i in range(4)]
        assert len(data["tokenizer"]["sha256"]) == 64
        assert changes_since_freeze(study, ledger, "g1") == []


def test_a_moved_study_keeps_its_recipes(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    moved = tmp_path / "elsewhere" / "s"
    shutil.copytree(folder, moved)
    with Ledger.open(moved) as ledger:
        assert changes_since_freeze(load_study(moved), ledger, "g1") == []
    # a data folder outside the study is named by its folder name, not this machine's path
    outside = tmp_path / "shared" / "corpus"
    shutil.copytree(prepared, outside)
    toml = folder / "study.toml"
    toml.write_text(toml.read_text().replace('data = "data"', f'data = "{outside}"'))
    recipe = resolve_recipes(load_study(folder))["c_a"].to_json()
    assert recipe["runner"]["data"] == recipe["data"]["folder"] == "<outside the study>/corpus"
    assert str(tmp_path) not in json.dumps(recipe)
    with Ledger.open(folder) as ledger:
        # same content, other folder: only the path as written changed
        edits = changes_since_freeze(load_study(folder), ledger, "g1")
    assert edits and all("data.folder" in e or "runner.data" in e for e in edits), edits


def test_two_studies_one_matrix_value_apart_freeze_to_different_hashes(
    tmp_path: Path, prepared: Path
) -> None:
    first = _study(tmp_path / "1", prepared)
    second = _study(tmp_path / "2", prepared)
    (second / "matrix.csv").write_text(
        MATRIX.replace("c_b,comparator,2,48,0.04,4096", "c_b,comparator,2,48,0.04,8192")
    )
    hashes = []
    for folder in (first, second):
        with Ledger.open(folder) as ledger:
            outcome = freeze(load_study(folder), ledger, "g1")
            hashes.append((outcome.record.sha256, outcome.to_dict()["frozen_sha256"]))
    assert hashes[0][0] != hashes[1][0] and hashes[0][1] != hashes[1][1]


def test_edit_a_matrix_value(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    matrix = folder / "matrix.csv"
    matrix.write_text(
        matrix.read_text().replace("c_b,comparator,2,48,0.04", "c_b,comparator,2,48,0.05")
    )
    message = _refused(folder, "c_b", "matrix.matrix_lr", "0.04 -> 0.05")
    assert "\n" not in message


def test_edit_a_new_matrix_column(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    lines = (folder / "matrix.csv").read_text().splitlines()
    lines = [lines[0] + ",warmup_ratio"] + [line + ",0.1" for line in lines[1:]]
    (folder / "matrix.csv").write_text("\n".join(lines) + "\n")
    _refused(folder, "matrix.warmup_ratio", "(absent) -> 0.1", "c_a, c_b, c_c")


def test_edit_a_runner_setting(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    toml = folder / "study.toml"
    toml.write_text(toml.read_text().replace("eval_tokens = 8192", "eval_tokens = 16384"))
    _refused(folder, "runner.eval_tokens", "8192 -> 16384")


def test_a_replaced_shard(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    data = folder / "data"
    shutil.copyfile(data / "shard_00001.parquet", data / "shard_00000.parquet")
    _refused(folder, "data.shards.shard_00000.parquet")


def test_a_replaced_tokenizer(tmp_path: Path, prepared: Path) -> None:
    from stagewise.data.prepare import prepare

    folder = _study(tmp_path, prepared)
    _freeze(folder)
    other = tmp_path / "other"
    prepare("sample", other, vocab_size=512)
    shutil.copyfile(other / "tokenizer" / "tokenizer.pkl", folder / "data/tokenizer/tokenizer.pkl")
    _refused(folder, "data.tokenizer.sha256")


def test_an_edited_own_trainer_script(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared, OWN_TRAINER, data=False)
    script = folder / "train.py"
    script.write_text("print('lr')\n")
    _freeze(folder)
    with Ledger.open(folder) as ledger:
        record = ledger.current_freeze("g1")
        assert record is not None
        recipe = (frozen_recipes(record) or {})["c_b"]
    # the argv after substitution, run-level names as written; the script's sha256
    assert recipe["trainer"]["commands"]["study"] == [
        "{python}",
        "train.py",
        "--lr",
        "0.04",
        "--out",
        "{out}",
    ]
    assert recipe["trainer"]["programs"] == {
        "train.py": sha256_text("print('lr')\n"),
    }
    assert recipe["data"] is None  # the study's own trainer reads its data itself
    script.write_text("print('lr', 2)\n")
    _refused(folder, "trainer.programs.train.py")


def test_a_role_change(tmp_path: Path, prepared: Path) -> None:
    folder = _study(tmp_path, prepared)
    _freeze(folder)
    matrix = folder / "matrix.csv"
    matrix.write_text(matrix.read_text().replace("c,c_c,variant", "c,c_c,comparator"))
    _refused(folder, "c_c", "matrix.role", '"variant" -> "comparator"')


def _results(folder: Path, offset: float = 0.0) -> Path:
    rows = ["stage,condition_id,seed,host,val_bpb"]
    for seed in (1, 2):
        for cid, value in (("c_a", 1.9), ("c_b", 1.8), ("c_c", 2.1)):
            rows.append(f"s1,{cid},{seed},block-a,{value + offset + 0.01 * seed:.4f}")
    path = folder / f"results{offset}.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_after_an_amendment_earlier_results_of_changed_conditions_no_longer_count(
    tmp_path: Path, prepared: Path
) -> None:
    folder = _study(tmp_path, prepared, EXTERNAL_STUDY, data=False)
    _freeze(folder)
    run_cli("import", folder, _results(folder), check=True)
    first = json.loads(run_cli("gate", folder, "g1", "--json", check=True).stdout)
    assert first["promoted"] == ["c_b"] and "not_counted" not in first
    matrix = folder / "matrix.csv"
    matrix.write_text(
        matrix.read_text().replace("c_b,comparator,2,48,0.04", "c_b,comparator,2,48,0.05")
    )
    refused = run_cli("gate", folder, "g1", "--json")
    assert refused.returncode != 0 and "matrix.matrix_lr" in refused.stderr
    assert "Traceback" not in refused.stderr
    run_cli("freeze", folder, "g1", "--amend", "--reason", "b at lr 0.05", check=True)
    after = json.loads(run_cli("gate", folder, "g1", "--json", check=True).stdout)
    left_out = after["not_counted"]
    assert sorted(n["run"] for n in left_out) == ["s1/c_b/seed1/block-a", "s1/c_b/seed2/block-a"]
    assert all("replaced by the amendment" in n["why"] for n in left_out)
    assert after["promoted"] == ["c_a"]  # c_b's old results no longer count
    assert [i["condition_id"] for i in after["incomplete"]] == ["c_b"]
    with Ledger.open(folder) as ledger:
        decision = ledger.active_decision("g1")
        assert decision is not None and len(decision.payload["not_counted"]) == 2
    # the bundle says so too, and verifies
    run_cli("bundle", folder, "--out", tmp_path / "b", check=True)
    decisions = json.loads((tmp_path / "b/decisions/decisions.json").read_text())
    assert decisions["decisions"][-1]["payload"]["not_counted"]
    assert run_cli("verify", tmp_path / "b").returncode == 0
    report = run_cli("report", folder, "--out", tmp_path / "r", check=True)
    assert report.returncode == 0
    html = "".join(p.read_text() for p in (tmp_path / "r").rglob("*.html"))
    assert "not counted" in html and "s1/c_b/seed1/block-a" in html


def test_a_result_of_a_recipe_never_frozen_is_refused_by_gate(
    tmp_path: Path, prepared: Path
) -> None:
    folder = _study(tmp_path, prepared, EXTERNAL_STUDY, data=False)
    _freeze(folder)
    matrix = folder / "matrix.csv"
    text = matrix.read_text()
    matrix.write_text(text.replace("c_b,comparator,2,48,0.04", "c_b,comparator,2,48,0.05"))
    # imported results declare the recipe the study gives now (lr 0.05), never frozen
    run_cli("import", folder, _results(folder), check=True)
    matrix.write_text(text)  # the study reads as frozen again
    refused = run_cli("gate", folder, "g1", "--json")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    line = refused.stderr.strip()
    assert "\n" not in line
    for word in ("c_b", "matrix.matrix_lr", "0.04 -> 0.05", "frozen at"):
        assert word in line, line


def test_runs_record_and_retrain_the_recipe(tmp_path: Path, prepared: Path) -> None:
    """A real run records its recipe; after an amendment, `run` trains the changed one again."""
    folder = _study(tmp_path, prepared)
    toml = folder / "study.toml"
    toml.write_text(toml.read_text().replace('budget = "4s"', 'budget = "8steps"'))
    matrix = folder / "matrix.csv"
    matrix.write_text("\n".join(matrix.read_text().splitlines()[:2]) + "\n")  # c_a only
    _freeze(folder)
    run_cli("run", folder, "s1", check=True)
    study = load_study(folder)
    with Ledger.open(folder) as ledger:
        (run,) = ledger.runs()
        recipe = resolve_recipes(study)["c_a"]
        assert run.recipe_sha256 == recipe.sha256 and run.summary["recipe_sha256"] == recipe.sha256
        assert ledger.recipe_texts([recipe.sha256]) == {recipe.sha256: recipe.canonical}
        first_bpb = run.val_bpb
    toml.write_text(toml.read_text().replace("eval_tokens = 8192", "eval_tokens = 4096"))
    run_cli("freeze", folder, "g1", "--amend", "--reason", "shorter eval", check=True)
    out = run_cli("run", folder, "s1", "--json", check=True)
    assert json.loads(out.stdout)["retrained"] == ["s1/c_a/seed1/block-a"]
    with Ledger.open(folder) as ledger:
        (run,) = ledger.runs()
        assert run.recipe_sha256 == resolve_recipes(load_study(folder))["c_a"].sha256
        started = ledger.events("run.started")[-1]
        # the result it replaced stays on the chain
        assert started.payload["replaces"]["val_bpb"] == first_bpb
        assert ledger.integrity_problems() == []


def test_freeze_refuses_missing_data_naming_the_prepare_command(
    tmp_path: Path, prepared: Path
) -> None:
    folder = _study(tmp_path, prepared, data=False)
    with Ledger.open(folder) as ledger, pytest.raises(DataError, match="data prepare"):
        freeze(load_study(folder), ledger, "g1")
    for args in (("freeze", folder, "g1"), ("run", folder, "--freeze")):
        proc = run_cli(*args)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert str(folder / "data") in proc.stderr and "stagewise data prepare" in proc.stderr
    with Ledger.open(folder) as ledger:
        assert ledger.freezes() == []
    # an unreadable (missing) tokenizer is named too
    shutil.copytree(prepared, folder / "data")
    (folder / "data/tokenizer/tokenizer.pkl").unlink()
    proc = run_cli("freeze", folder, "g1")
    assert proc.returncode != 0 and "tokenizer.pkl" in proc.stderr


def test_freeze_warns_when_a_confirm_gate_tests_no_condition(
    tmp_path: Path, prepared: Path
) -> None:
    # the only variant (c_c) is not a candidate of s1: the rule tests nothing
    text = LOCAL_STUDY.replace(
        'kind = "promote"\nstages = ["s1"]\nrules = [{ rule = "best_k", k = 1 }]',
        'kind = "confirm"\nstages = ["s1"]\n'
        'rules = [{ rule = "max_gap_to_reference", threshold = 0.01, roles = ["variant"] }]',
    ).replace('candidates = "all"', 'candidates = ["c_a", "c_b"]')
    folder = _study(tmp_path, prepared, text)
    proc = run_cli("freeze", folder, "g1")
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert "warning:" in flat and "rules test no condition" in flat
    data = json.loads(run_cli("freeze", folder, "g1", "--json", check=True).stdout)
    assert any("rules test no condition" in w for w in data["warnings"])
