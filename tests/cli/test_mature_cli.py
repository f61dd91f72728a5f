"""Issue 28 item 8: the CLI behaves like a mature tool.

`--version`; `--help` without torch or scipy; one "Did you mean"; `--json` on validate, report,
bundle and verify; plurals; each `--seed` meaning under its own name with the old spelling kept.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import stagewise
from tests.conftest import run_cli, write_study


def test_importing_the_cli_loads_neither_torch_nor_scipy() -> None:
    # A fresh interpreter: this test session has long imported both.
    code = (
        "import sys, stagewise.cli.app; "
        "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_version_and_help() -> None:
    version = run_cli("--version", check=True)
    assert version.stdout.strip() == f"stagewise {stagewise.__version__}"
    assert "--version" in run_cli("--help", check=True).stdout


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (("stauts",), "Did you mean 'status'?"),
        (("data", "prepar"), "Did you mean 'prepare'?"),
        (("status", ".", "--jsn"), "(Possible options: --json)"),
    ],
)
def test_a_typo_gets_one_hint(args: tuple[str, ...], hint: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2
    text = proc.stdout + proc.stderr
    assert text.count(hint) == 1
    assert text.lower().count("did you mean") <= 1 and text.count("Possible options") <= 1


def test_validate_json_and_plurals(tmp_path: Path) -> None:
    folder = write_study(tmp_path / "s")
    toml = (folder / "study.toml").read_text()
    # One host only: "1 host", never "1 hosts".
    one = toml.replace('hosts = ["block-a", "block-b"]', 'hosts = ["block-a"]').replace(
        '[hosts.block-b]\nexecutor = "external"\n', ""
    )
    (folder / "study.toml").write_text(one)
    assert run_cli("validate", folder, check=True).stdout.strip() == (
        "ok: tiny: 3 conditions, 1 host, 2 stages, 1 gate"
    )
    obj = json.loads(run_cli("validate", folder, "--json", check=True).stdout)
    assert obj == {
        "ok": True,
        "study": "tiny",
        "error": None,
        "conditions": 3,
        "hosts": 1,
        "stages": 2,
        "gates": 1,
        "edited_since_freeze": {},
    }
    (folder / "study.toml").write_text(one.replace('budget = "4s"', 'budget = "soon"'))
    bad = run_cli("validate", folder, "--json")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    obj = json.loads(bad.stdout)
    assert obj["ok"] is False and "budget" in obj["error"]


def test_report_bundle_verify_print_json(tmp_path: Path) -> None:
    folder = write_study(tmp_path / "s")
    run_cli("freeze", folder, "g1", check=True)  # starts the hand-written study's ledger
    rep = json.loads(
        run_cli("report", folder, "--out", tmp_path / "r", "--json", check=True).stdout
    )
    assert rep["html"].endswith("report.html") and "runs" in rep["tables"]
    assert "flagged_runs" in rep["tables"]
    bun = json.loads(
        run_cli("bundle", folder, "--out", tmp_path / "b", "--json", check=True).stdout
    )
    assert bun["files"] > 0 and len(bun["chain_head"]) == 64
    ver = json.loads(run_cli("verify", tmp_path / "b", "--json", check=True).stdout)
    assert ver["ok"] is True and ver["problems"] == [] and ver["chain_head"] == bun["chain_head"]
    (tmp_path / "b" / "study" / "matrix.csv").write_text("tampered\n")
    bad = run_cli("verify", tmp_path / "b", "--json")
    assert bad.returncode == 1 and json.loads(bad.stdout)["ok"] is False


def test_each_seed_has_its_own_name_and_the_old_one_still_works(tmp_path: Path) -> None:
    help_text = {
        cmd: run_cli(*cmd.split(), "--help", check=True).stdout
        for cmd in ("gate", "plan", "backtest", "curves")
    }
    assert "--bootstrap-seed" in help_text["gate"]
    assert "--simulation-seed" in help_text["plan"]
    assert "--replay-seed" in help_text["backtest"]
    assert "--generator-seed" in help_text["curves"]
    for text in help_text.values():
        assert "--seed " not in text and "--seed\n" not in text  # the alias is hidden

    curves = tmp_path / "c.csv"
    rows = ["condition_id,budget_seconds,seed,host,val_bpb"]
    rows += [f"{c},{b},1,h1,{v + b / 1000}" for c, v in (("a", 1.0), ("b", 2.0)) for b in (30, 90)]
    curves.write_text("\n".join(rows) + "\n")
    args = ("backtest", curves, "--policies", "final_only,top_k:k=1", "--replays", "20", "--json")
    new = json.loads(run_cli(*args, "--replay-seed", "3", check=True).stdout)
    old = json.loads(run_cli(*args, "--seed", "3", check=True).stdout)
    assert new["seed"] == old["seed"] == 3


def test_init_names_every_step_and_run_refuses_without_data(tmp_path: Path) -> None:
    folder = tmp_path / "my study"
    out = run_cli("init", folder, check=True).stdout.splitlines()
    assert out[1] == "next, in this order:"
    assert [line.strip() for line in out[2:]] == [
        f"stagewise data prepare --out {folder}/data",
        f"stagewise validate {folder}",
        f"stagewise run {folder} --freeze --through screen",
        f"stagewise status {folder}",
        f"stagewise report {folder}",
    ]
    # The template fits a CPU: one micro-batch per step, a small evaluation, one-core slots.
    toml = (folder / "study.toml").read_text()
    assert "min_steps = 20" in toml and "workers = 2" in toml and "eval_tokens = 4096" in toml
    assert "device_batch_size = 8" in toml and "sequence_len = 128" in toml
    assert all(line.endswith(",1024") for line in (folder / "matrix.csv").read_text().split()[1:])

    refused = run_cli("run", folder, "--freeze", "--through", "screen")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"stagewise data prepare --out {folder}/data" in refused.stderr
    assert "nothing was frozen or started" in refused.stderr
    status = json.loads(run_cli("status", folder, "--json", check=True).stdout)
    assert not any(g["frozen"] for g in status["gates"])
    assert all(s["runs"]["pending"] == s["planned_runs"] for s in status["stages"][:1])
