"""Issue 18, the integrity half: each finding reproduced as an adversary would, now detected.

Findings 1 (the chain does not cover what decides), 2 (verify accepts consistent forgeries),
3 (a genuine bundle fails verify), 5 (quadratic gate time), 8 (a lost ledger is silently
recreated) and, from 6 and 10, the read-only ledger, the full disk, a bad schema_version and
the read-only study folder. Each test failed on the code before issue 18.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import stat
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from scipy import stats as sps

from stagewise.audit.bundle import write_bundle, write_manifests
from stagewise.audit.verify import verify_bundle
from stagewise.errors import LedgerError
from stagewise.executors.external import import_results
from stagewise.gates.decide import apply_gate
from stagewise.gates.freeze import freeze
from stagewise.ledger import Ledger, sha256_text
from stagewise.study import load_study
from tests.conftest import MATRIX, STUDY, run_cli, write_study

GREEDY = "p06_greedy_winner"
TAMPERED_RUN = f"stage3/{GREEDY}/seed46/linux-l40s"


def _init(folder: Path, example: str | None = None) -> None:
    from stagewise.create import init_study

    init_study(folder, example)


@pytest.fixture(scope="module")
def p06(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """paper06 as a user leaves it: 12-hour cells imported, g12h frozen (post hoc), applied."""
    root = tmp_path_factory.mktemp("adv") / "p06"
    _init(root, "paper06")
    study = load_study(root)
    with Ledger.open(root, create=False) as ledger:
        import_results(study, ledger, [root / "results" / "stage3_12h.csv"])
        freeze(study, ledger, "g12h")
        apply_gate(study, ledger, "g12h")
    return root


@pytest.fixture(scope="module")
def p06_bundle(p06: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adv-bundle") / "B"
    write_bundle(p06, out)
    return out


def _copy(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    out = tmp_path / name
    shutil.copytree(folder, out)
    return out


def _sql(folder: Path, statement: str, *args: object) -> int:
    conn = sqlite3.connect(folder / "ledger.sqlite")
    try:
        changed = conn.execute(statement, args).rowcount
        conn.commit()
    finally:
        conn.close()
    return changed


def _refused(proc: object, *needles: str) -> str:
    """A one-line refusal with exit 2 that names what it refuses."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = str(proc.stderr).strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# --------------------------------------------------------------------------- finding 1


def test_f1_an_edited_result_is_caught_and_every_reader_refuses(
    p06: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    assert json.loads(run_cli("status", study, "--json", check=True).stdout)["chain_ok"] is True
    changed = _sql(
        study,
        "UPDATE runs SET val_bpb=0.930 WHERE condition_id=? AND seed=46 AND host='linux-l40s'",
        GREEDY,
    )
    assert changed == 1
    status = json.loads(run_cli("status", study, "--json", check=True).stdout)
    assert status["chain_ok"] is False
    assert TAMPERED_RUN in status["first_broken_link"]
    assert re.fullmatch(r"[0-9a-f]{64}", status["chain_head"])
    # The same CLI entry point in this process (a fresh interpreter per command adds nothing).
    for args in (
        ["gate", str(study), "g12h"],
        ["sensitivity", str(study), "g12h"],
        ["report", str(study), "--out", str(tmp_path / "report")],
        ["bundle", str(study), "--out", str(tmp_path / "bundle")],
    ):
        code, _out, err = _main(args, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (args, err)
        assert TAMPERED_RUN in err, err


def test_f1_a_rewritten_freeze_with_a_matching_study_toml_is_caught(
    p06: Path, tmp_path: Path
) -> None:
    """The forger loosens the threshold in study.toml and rewrites the freeze row to match
    (new canonical JSON and sha256, made by the tool itself in a scratch copy)."""
    scratch = _copy(p06, tmp_path, "scratch")
    study = _copy(p06, tmp_path, "study")
    for folder in (scratch, study):
        toml = folder / "study.toml"
        text = toml.read_text(encoding="utf-8")
        assert "threshold = 0.010" in text
        toml.write_text(text.replace("threshold = 0.010", "threshold = 0.030"), encoding="utf-8")
    scratch_study = load_study(scratch)
    with Ledger.open(scratch, create=False) as ledger:
        amended = freeze(scratch_study, ledger, "g12h", amend=True, reason="forgery").record
    changed = _sql(
        study,
        "UPDATE freezes SET canonical=?, sha256=? WHERE gate='g12h'",
        amended.canonical,
        amended.sha256,
    )
    assert changed == 1
    _refused(run_cli("gate", study, "g12h"), "freeze g12h")


def test_f1_an_edited_event_blocks_the_gate_and_records_nothing(p06: Path, tmp_path: Path) -> None:
    study = _copy(p06, tmp_path)
    changed = _sql(
        study, "UPDATE events SET payload = replace(payload, '\"added\":12', '\"added\":13')"
    )
    assert changed >= 1
    with Ledger.open(study, create=False) as ledger:
        decisions = len(ledger.decisions())
    err = _refused(run_cli("gate", study, "g12h"), "(import)")
    assert "hash does not match" in err
    with Ledger.open(study, create=False) as ledger:
        assert len(ledger.decisions()) == decisions


# --------------------------------------------------------------------------- finding 2


def _json_edit(path: Path, edit: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _promote_greedy(b: Path) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        for d in data["decisions"]:
            if d["gate"] == "g12h" and d["active"]:
                d["promoted"] = [*d["promoted"], GREEDY]
                d["payload"]["verdicts"][GREEDY] = "pass"

    _json_edit(b / "decisions" / "decisions.json", edit)


def _loosen_frozen_rule(b: Path) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        rec = data["records"][0]
        rec["canonical"] = rec["canonical"].replace("0.01", "0.03")
        rec["sha256"] = sha256_text(rec["canonical"])
        data["current_sha256"] = rec["sha256"]

    _json_edit(b / "frozen" / "g12h.json", edit)


def _not_post_hoc(b: Path) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        rec = data["records"][0]
        assert rec["post_hoc"] is True
        rec["post_hoc"] = False
        rec["frozen_at"] = "2020-01-01T00:00:00.000000Z"

    _json_edit(b / "frozen" / "g12h.json", edit)


def _edit_runs_csv(b: Path) -> None:
    path = b / "results" / "runs.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    i = next(i for i, line in enumerate(lines) if GREEDY in line and ",46," in line)
    lines[i] = re.sub(
        r",(\d\.\d+),", lambda m: f",{float(m.group(1)) - 0.05:.6f},", lines[i], count=1
    )
    path.write_text("".join(lines), encoding="utf-8")


def _edit_results_everywhere(b: Path) -> None:
    """The results themselves, with the runs files kept consistent with each other."""

    def edit(data: dict) -> None:  # type: ignore[type-arg]
        for row in data["runs"]:
            if row["condition_id"] == GREEDY:
                row["val_bpb"] -= 0.05

    _json_edit(b / "results" / "runs.json", edit)
    from stagewise.report.tables import RUN_COLUMNS, Table

    runs = json.loads((b / "results" / "runs.json").read_text(encoding="utf-8"))
    table = Table("runs", "Runs", list(RUN_COLUMNS), runs["runs"])
    (b / "results" / "runs.csv").write_text(table.to_csv(), encoding="utf-8")


def _declared_verdict(b: Path) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        row = next(r for r in data["rows"] if r["condition_id"] == GREEDY)
        assert row["declared_verdict"] == "fail"
        row["declared_verdict"] = "pass"

    _json_edit(b / "tables" / "sensitivity_g12h.json", edit)


def _budget_counterfactual(b: Path) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        data["rows"][-1]["confirmation_gpu_hours"] += 100.0

    _json_edit(b / "tables" / "budget_counterfactuals.json", edit)


def _figure_data(b: Path) -> None:
    path = sorted((b / "figures").glob("*.csv"))[0]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), lines[1], count=1)
    path.write_text("".join(lines), encoding="utf-8")


def _delete(*rels: str) -> Callable[[Path], None]:
    def forge(b: Path) -> None:
        for rel in rels:
            (b / rel).unlink()

    return forge


def _remove_an_event(b: Path) -> None:
    def edit(data: dict) -> None:  # type: ignore[type-arg]
        events = data["events"]
        del events[len(events) // 2]

    _json_edit(b / "ledger" / "events.json", edit)


FORGERIES: dict[str, Callable[[Path], None]] = {
    "decision promotes greedy": _promote_greedy,
    "frozen record with a new threshold and its sha256": _loosen_frozen_rule,
    "post_hoc true -> false, frozen earlier": _not_post_hoc,
    "results/runs.csv edited": _edit_runs_csv,
    "results edited in runs.json and runs.csv": _edit_results_everywhere,
    "sensitivity declared_verdict": _declared_verdict,
    "budget counterfactual": _budget_counterfactual,
    "figure data": _figure_data,
    "agreement table deleted": _delete("tables/agreement.csv", "tables/agreement.json"),
    "frozen/g12h.json deleted": _delete("frozen/g12h.json"),
    "an event removed": _remove_an_event,
}


@pytest.mark.parametrize("name", list(FORGERIES))
def test_f2_a_consistent_forgery_fails_verify(name: str, p06_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(p06_bundle, tmp_path)
    assert verify_bundle(bundle, images=False).ok
    FORGERIES[name](bundle)
    write_manifests(bundle)  # the forger keeps the manifests consistent
    report = verify_bundle(bundle, images=False)
    assert not report.ok, name
    assert not any("MANIFEST" in p for p in report.problems), report.problems


def test_f2_a_redrawn_figure_fails_verify(p06_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(p06_bundle, tmp_path)
    svg = sorted((bundle / "figures").glob("*.svg"))[0]
    text = svg.read_text(encoding="utf-8")
    svg.write_text(text.replace("</svg>", "<!-- redrawn --></svg>"), encoding="utf-8")
    write_manifests(bundle)
    report = verify_bundle(bundle)
    assert any(f"figures/{svg.name}" in p for p in report.problems), report.problems


def test_f2_manifest_paths_that_leave_the_bundle_are_refused(
    p06_bundle: Path, tmp_path: Path
) -> None:
    bundle = _copy(p06_bundle, tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("not part of the bundle\n", encoding="utf-8")
    digest = sha256_text(outside.read_text(encoding="utf-8"))
    manifest = json.loads((bundle / "MANIFEST.json").read_text(encoding="utf-8"))
    for rel in ("../outside.txt", str(outside)):
        manifest["files"].append({"path": rel, "bytes": outside.stat().st_size, "sha256": digest})
    (bundle / "MANIFEST.json").write_text(json.dumps(manifest), encoding="utf-8")
    problems = verify_bundle(bundle, images=False).problems
    assert sum("leaves the bundle" in p for p in problems) == 2, problems


def test_f2_verify_expect_passes_with_the_printed_head_only(
    p06: Path, p06_bundle: Path, tmp_path: Path
) -> None:
    bundle = _copy(p06_bundle, tmp_path)
    status = json.loads(run_cli("status", p06, "--json", check=True).stdout)
    head = status["chain_head"]
    proc = run_cli("verify", bundle, "--expect", head)
    assert proc.returncode == 0, proc.stdout
    assert f"chain head: {head}" in proc.stdout
    other = verify_bundle(bundle, expect="0" * 64, images=False)
    assert any("expected" in p for p in other.problems)

    # A forger who drops the last events (and rewrites the stated head) is caught by --expect.
    def truncate(data: dict) -> None:  # type: ignore[type-arg]
        data["events"] = data["events"][:-1]
        data["chain_head"] = data["events"][-1]["hash"]

    _json_edit(bundle / "ledger" / "events.json", truncate)
    write_manifests(bundle)
    assert not verify_bundle(bundle, expect=head, images=False).ok


# --------------------------------------------------------------------------- finding 3

CELLS = """\
stage,condition_id,seed,host,val_bpb,training_seconds,status,cause
s1,c_a,1,vm,1.50,4,,
s1,vmcond,1,vm,1.48,4,,
s1,root-box,1,vm,1.52,4,,
s1,c_a,2,vm,1.51,4,,
s1,vmcond,2,vm,1.47,4,,
s1,root-box,2,vm,1.53,4,,
s1,c_a,1,block-b,1.49,4,,
s1,vmcond,1,block-b,1.50,4,,
s1,root-box,1,block-b,1.54,4,,
s1,c_a,2,block-b,1.505,4,,
s1,vmcond,2,block-b,1.485,4,,
s1,root-box,2,block-b,,4,failed,see file%2Fhome%2Froot%2Fruns%2Ftrain.log on vm
"""


def test_f3_a_host_block_named_like_the_machine_still_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine is `vm`, its user `root`: a host block `vm`, conditions `vmcond`, `root-box`.
    monkeypatch.setattr("stagewise.audit.scrub._host", lambda: "vm")
    monkeypatch.setattr("stagewise.audit.scrub._user", lambda: "root")
    study_text = STUDY.replace("block-a", "vm")
    matrix = MATRIX.replace("c_b", "vmcond").replace("c_c", "root-box")
    root = write_study(tmp_path / "study", study_text, matrix)
    cells = tmp_path / "cells.csv"
    cells.write_text(CELLS, encoding="utf-8")
    study = load_study(root)
    with Ledger.open(root) as ledger:
        import_results(study, ledger, [cells])
        freeze(study, ledger, "g1")
        apply_gate(study, ledger, "g1")
    out = tmp_path / "B"
    result = write_bundle(root, out)
    assert result.leaks == []  # `vmcond` and `root-box` are not the host or the user
    # Declared ids are never scrubbed (issue 30, item 6): the host block stays `vm` everywhere.
    toml = tomllib.loads((out / "study" / "study.toml").read_text(encoding="utf-8"))
    assert set(toml["hosts"]) == {"vm", "block-b"}
    runs = json.loads((out / "results" / "runs.json").read_text(encoding="utf-8"))["runs"]
    assert {r["host"] for r in runs} == {"vm", "block-b"}
    assert {r["condition_id"] for r in runs} == {"c_a", "vmcond", "root-box"}
    for path in out.rglob("*"):
        if path.is_file() and path.suffix != ".png":
            text = path.read_text(encoding="utf-8")
            assert "%2Fhome" not in text and "<user>-box" not in text, path
            assert "scrubbed-host" not in text and "<host>" not in text.replace("`<host>`", ""), (
                path
            )
    report = verify_bundle(out, images=False)
    assert report.ok, report.problems
    assert report.commitments == len(runs) + 2  # every run, the freeze and the decision


# --------------------------------------------------------------------------- finding 5


def test_f5_leave_one_cell_out_is_bounded_and_names_its_cells() -> None:
    from stagewise.analysis.agreement import leave_one_cell_out
    from stagewise.analysis.cells import Cell

    for n in (4, 100, 20_000):
        cells = [Cell("s", seed, "h") for seed in range(n)]
        calls: list[Cell] = []
        out = leave_one_cell_out(cells, ["a"], lambda cell, seen=calls: seen.append(cell) or ["a"])
        if n <= 100:  # every cell while that is cheap
            assert calls == cells
        else:  # a bounded subset spread over all of them
            assert 1 <= len(calls) <= 100
            assert calls[0] == cells[0] and calls[-1].seed > n // 2
        assert len(set(calls)) == len(calls) and [o.cell for o in out] == calls


def test_f5_kendalls_w_over_many_cells_equals_the_per_cell_definition() -> None:
    from stagewise.analysis.agreement import kendalls_w
    from stagewise.analysis.cells import Cell

    rng = random.Random(3)
    conditions = ["a", "b", "c", "d"]
    cells = [Cell("s", i, f"h{i % 3}") for i in range(300)]
    # Rounded values make ties, which the tie correction must count.
    values = {c: {cell: round(rng.random(), 1) for cell in cells} for c in conditions}
    totals = dict.fromkeys(conditions, 0.0)
    tie_sum = 0.0
    for cell in cells:
        row = [values[c][cell] for c in conditions]
        for c, r in zip(conditions, sps.rankdata(row), strict=True):
            totals[c] += float(r)
        tie_sum += sum(t**3 - t for t in (row.count(v) for v in set(row)))
    m, n = len(cells), len(conditions)
    s = sum((t - m * (n + 1) / 2) ** 2 for t in totals.values())
    expected = 12 * s / (m**2 * (n**3 - n) - m * tie_sum)
    assert kendalls_w(cells, values, conditions) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- finding 8


def test_f8_a_deleted_or_emptied_ledger_is_refused_with_the_backup(tmp_path: Path) -> None:
    study = tmp_path / "p"
    _init(study, "paper06")
    ledger = study / "ledger.sqlite"
    backup = study / "ledger.sqlite.bak"
    assert backup.is_file()  # the outside decisions were recorded at init
    ledger.unlink()
    err = _refused(run_cli("status", study), "ledger.sqlite.bak", "restore")
    assert "only `stagewise init` creates a ledger" in err
    assert not ledger.exists()
    ledger.write_bytes(b"")
    _refused(run_cli("freeze", study, "g12h"), "empty", "ledger.sqlite.bak")
    assert ledger.stat().st_size == 0
    shutil.copy(backup, ledger)  # what the message says to do
    status = json.loads(run_cli("status", study, "--json", check=True).stdout)
    assert status["chain_ok"] is True
    assert any(g["decision"] and g["decision"]["manual"] for g in status["gates"])


def test_f8_a_study_folder_without_a_ledger_is_not_given_one(tmp_path: Path) -> None:
    root = write_study(tmp_path / "s")
    _refused(run_cli("status", root), "only `stagewise init` creates a ledger")
    assert not (root / "ledger.sqlite").exists()
    (root / "runs" / "s1").mkdir(parents=True)
    (root / "runs" / "s1" / "train.log").write_text("x")
    with pytest.raises(LedgerError, match="runs/"):
        Ledger.open(root)  # even the library refuses where work was recorded


def test_a_hand_written_study_gets_its_ledger_from_the_first_recording_command(
    tmp_path: Path,
) -> None:
    """Reading commands create nothing; `freeze` starts the ledger of a study with no recorded work,
    as `init` would, and a study that recorded work and lost its ledger is still refused."""
    root = write_study(tmp_path / "s")
    _refused(run_cli("status", root), "only `stagewise init` creates a ledger")
    assert not (root / "ledger.sqlite").exists()
    first_gate = next(iter(load_study(root).gates))
    frozen = run_cli("freeze", root, first_gate)
    assert frozen.returncode == 0, frozen.stderr
    assert (root / "ledger.sqlite").is_file()
    assert run_cli("status", root).returncode == 0
    (root / "ledger.sqlite").unlink()
    (root / "decisions").mkdir(exist_ok=True)
    (root / "decisions" / "g.json").write_text("{}")
    _refused(run_cli("freeze", root, first_gate), "ledger")


# --------------------------------------------------------------------------- findings 6, 10


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The CLI in this process (for monkeypatched conditions a subprocess cannot see)."""
    from stagewise.cli.app import main

    old = sys.argv
    sys.argv = ["stagewise", *argv]
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def test_f6_f10_a_read_only_study_is_read_and_writes_say_so(
    p06: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    study = _copy(p06, tmp_path)
    before = (study / "ledger.sqlite").read_bytes()
    monkeypatch.setattr("stagewise.ledger.store._writable", lambda folder, path: False)
    code, out, err = _main(["status", str(study), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["chain_ok"] is True
    code, out, err = _main(["plan", str(study), "--json"], capsys)
    assert code == 0, err
    code, out, err = _main(["sensitivity", str(study), "g12h", "--json"], capsys)
    assert code == 0, err
    code, out, err = _main(["bundle", str(study), "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "chain head:" in out, err
    code, out, err = _main(["freeze", str(study), "g12h", "--amend", "--reason", "x"], capsys)
    assert code == 2 and "the study folder is read-only" in err and len(err.splitlines()) == 1
    assert (study / "ledger.sqlite").read_bytes() == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_f10_a_really_read_only_folder(p06: Path, tmp_path: Path) -> None:
    study = _copy(p06, tmp_path)
    for path in [study / "ledger.sqlite", study]:
        path.chmod(stat.S_IRUSR | stat.S_IXUSR | (stat.S_IRUSR if path.is_file() else 0))
    try:
        status = json.loads(run_cli("status", study, "--json", check=True).stdout)
        assert status["chain_ok"] is True
        _refused(run_cli("freeze", study, "g12h", "--amend", "--reason", "x"), "read-only")
    finally:
        study.chmod(0o755)


def test_f6_a_full_disk_says_disk_full(tmp_path: Path) -> None:
    root = write_study(tmp_path / "s")
    Ledger.open(root).close()
    study = load_study(root)
    results = tmp_path / "r.csv"
    results.write_text("stage,condition_id,seed,host,val_bpb\ns1,c_a,1,block-a,1.5\n")
    with Ledger.open(root, create=False) as ledger:
        pages = ledger._conn.execute("PRAGMA page_count").fetchone()[0]
        ledger._conn.execute(f"PRAGMA max_page_count = {pages}")
        ledger.log_event("note", "fill", {"text": "y" * 200})  # the last free bytes
        with pytest.raises(LedgerError) as info:
            for _ in range(50):
                ledger.log_event("note", "fill", {"text": "z" * 4000})
        assert "disk full" in str(info.value) and "cannot rollback" not in str(info.value)
    with Ledger.open(root, create=False) as ledger:
        assert ledger.integrity_problems() == []
        import_results(study, ledger, [results])


def test_f6_a_bad_schema_version_is_one_line(p06: Path, tmp_path: Path) -> None:
    study = _copy(p06, tmp_path)
    _sql(study, "UPDATE meta SET value='v3' WHERE key='schema_version'")
    _refused(run_cli("status", study), "meta.schema_version", "'v3'")
