"""Issue 30, the verify half: a forger who knows the bundle format, with the genuine bundle of
the paper06 replay in hand, edits it and recomputes MANIFEST.json/csv as the tool would.
`verify --expect HEAD` (the genuine chain head) must fail every time.

One hand-built forgery per item (1, 3, 4, 5, 6) and a property-based test (item 12) that edits
any committed byte of any file. Each failed on the code before issue 30.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagewise.audit.bundle import dumps, write_bundle, write_manifests
from stagewise.audit.verify import verify_bundle
from stagewise.ledger import Ledger, sha256_text
from stagewise.report.tables import RUN_COLUMNS, Table
from tests.conftest import run_cli

GREEDY = "p06_greedy_winner"
BRIDGE = "p06_bridge_best"


@pytest.fixture(scope="module")
def genuine(paper06: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The genuine bundle of the replay and the genuine chain head (published elsewhere)."""
    out = tmp_path_factory.mktemp("genuine") / "B"
    result = write_bundle(paper06, out)
    report = verify_bundle(out, expect=result.chain_head, images=False)
    assert report.ok, report.problems
    return out, result.chain_head


def _forge(genuine: tuple[Path, str], tmp_path: Path, edit: Callable[[Path], None]) -> list[str]:
    bundle, head = genuine
    out = tmp_path / "forged"
    shutil.copytree(bundle, out, symlinks=True)
    edit(out)
    write_manifests(out)  # as a forger would
    return verify_bundle(out, expect=head, images=False).problems


def _edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    data = fn(data) or data
    path.write_text(dumps(data), encoding="utf-8")  # the bundle's own formatter


def _edit_runs(out: Path, fn: Callable[[dict[str, Any]], None]) -> None:
    def apply(data: dict[str, Any]) -> None:
        for row in data["runs"]:
            fn(row)

    _edit_json(out / "results" / "runs.json", apply)
    rows = json.loads((out / "results" / "runs.json").read_text(encoding="utf-8"))["runs"]
    table = Table("runs", "Runs", list(RUN_COLUMNS), rows)
    (out / "results" / "runs.csv").write_text(table.to_csv(), encoding="utf-8")


# --------------------------------------------------------------------------- item 1


def test_i1_a_renamed_map_swapping_two_conditions_is_refused(
    genuine: tuple[Path, str], tmp_path: Path
) -> None:
    swap = {GREEDY: BRIDGE, BRIDGE: GREEDY}

    def edit(out: Path) -> None:
        _edit_runs(
            out, lambda r: r.update(condition_id=swap.get(r["condition_id"], r["condition_id"]))
        )
        _edit_json(
            out / "ledger" / "commitments.json",
            lambda c: c.update(renamed={new: sha256_text(old) for old, new in swap.items()}),
        )

    problems = _forge(genuine, tmp_path, edit)
    assert any("'renamed' map the chain never committed to" in p for p in problems), problems
    assert any("differs from what event" in p or "no event" in p for p in problems), problems


def test_i1_a_texts_map_cannot_launder_a_rewritten_decision(
    genuine: tuple[Path, str], tmp_path: Path
) -> None:
    def edit(out: Path) -> None:
        def flip(data: dict[str, Any]) -> None:
            for d in data["decisions"]:
                if d["kind"] == "computed":
                    d["payload"]["verdicts"] = {k: "pass" for k in d["payload"]["verdicts"]}
                    shown = sha256_text(json.dumps(d["payload"], sort_keys=True))
                    texts[shown] = "0" * 64

        texts: dict[str, str] = {}
        _edit_json(out / "decisions" / "decisions.json", flip)
        _edit_json(out / "ledger" / "commitments.json", lambda c: c.update(texts=texts))

    problems = _forge(genuine, tmp_path, edit)
    assert any("'texts' map the chain never committed to" in p for p in problems), problems
    assert any("decisions.json: decision" in p and "differs" in p for p in problems), problems


def test_i1_published_originals_cannot_launder_an_edited_text(
    genuine: tuple[Path, str], tmp_path: Path
) -> None:
    """The forger rewrites a manual decision's reason and publishes, as the digest of its texts
    as written, the genuine one (it cannot know another): the shown text is bound too."""
    from stagewise.ledger import integrity

    def edit(out: Path) -> None:
        originals: dict[str, str] = {}

        def rewrite(data: dict[str, Any]) -> None:
            d = next(d for d in data["decisions"] if d["kind"] == "manual")
            h = integrity.LedgerHashes()
            originals[integrity.decision_record_key(d["event_seq"])] = integrity.digest(
                [h.text(d["reason"]), h.text(d["source"]), h.json(d["payload"])]
            )
            d["reason"] = "decided on the 12-hour cells after all"

        _edit_json(out / "decisions" / "decisions.json", rewrite)
        _edit_json(out / "ledger" / "commitments.json", lambda c: c.update(originals=originals))

    problems = _forge(genuine, tmp_path, edit)
    assert any("differs from what event" in p for p in problems), problems


def test_i1_canonical_scrubbed_is_not_trusted(genuine: tuple[Path, str], tmp_path: Path) -> None:
    """A loosened threshold in the frozen record and in study.toml, flagged `canonical_scrubbed`
    so that it would not be re-hashed."""

    def edit(out: Path) -> None:
        def loosen(data: dict[str, Any]) -> None:
            for rec in data["records"]:
                rec["canonical"] = rec["canonical"].replace("0.01", "0.03")
                rec["canonical_scrubbed"] = True

        _edit_json(out / "frozen" / "g12h.json", loosen)
        toml = out / "study" / "study.toml"
        toml.write_text(
            toml.read_text(encoding="utf-8").replace("threshold = 0.010", "threshold = 0.030"),
            encoding="utf-8",
        )

    problems = _forge(genuine, tmp_path, edit)
    assert any("canonical JSON does not hash" in p for p in problems), problems


# --------------------------------------------------------------------------- item 3


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("source", "import:other_cells.csv"),
        ("created_at", "2020-01-01T00:00:00.000000Z"),
        ("finished_at", "2020-01-01T00:00:00.000000Z"),
        ("attempts", 2),
        ("checkpoint_sha256", "0" * 64),
        ("recipe_sha256", "1" * 64),
    ],
)
def test_i3_every_run_field_of_a_bundle_is_committed(
    genuine: tuple[Path, str], tmp_path: Path, column: str, value: Any
) -> None:
    def edit(out: Path) -> None:
        def one(row: dict[str, Any]) -> None:
            if row["condition_id"] == GREEDY and row["seed"] == 46:
                row[column] = value

        _edit_runs(out, one)

    problems = _forge(genuine, tmp_path, edit)
    assert any(f"run stage3/{GREEDY}/seed46" in p for p in problems), problems


@pytest.mark.parametrize(
    "assignment",
    [
        "source = 'import:other.csv'",
        "finished_at = '2020-01-01T00:00:00.000000Z'",
        "created_at = '2020-01-01T00:00:00.000000Z'",
        "started_at = '2020-01-01T00:00:00.000000Z'",
        "attempts = 3",
        "checkpoint_sha256 = 'ab'",
    ],
)
def test_i3_every_run_field_of_the_ledger_is_committed(
    paper06: Path, tmp_path: Path, assignment: str
) -> None:
    study = tmp_path / "s"
    shutil.copytree(paper06, study)
    conn = sqlite3.connect(study / "ledger.sqlite")
    conn.execute(f"UPDATE runs SET {assignment} WHERE condition_id = ? AND seed = 46", (GREEDY,))
    conn.commit()
    conn.close()
    with Ledger.open(study, create=False) as ledger:
        problems = ledger.integrity_problems()
    assert any(f"stage3/{GREEDY}/seed46" in p for p in problems), problems


# --------------------------------------------------------------------------- item 4


def test_i4_a_file_no_bundle_holds_fails_listed_or_not(
    genuine: tuple[Path, str], tmp_path: Path
) -> None:
    bundle, head = genuine
    out = tmp_path / "extra"
    shutil.copytree(bundle, out)
    (out / "notes.txt").write_text("the reviewer agreed\n", encoding="utf-8")
    problems = verify_bundle(out, expect=head, images=False).problems
    assert any("extra file not in the manifest: notes.txt" in p for p in problems), problems
    write_manifests(out)
    problems = verify_bundle(out, expect=head, images=False).problems
    assert problems == ["notes.txt: not a file a bundle holds"], problems


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m["tables"]["published_stage2_60min_pooled"].update(published_summary=False),
        lambda m: m["tables"]["gate_g12h"].update(command="stagewise gate STUDY g12h --lenient"),
        lambda m: m["tables"]["gate_g12h"].update(title="12-hour gate (recomputed)"),
    ],
    ids=["published-marked-recomputed", "command", "title"],
)
def test_i4_table_manifest_edits_fail(
    genuine: tuple[Path, str], tmp_path: Path, change: Callable[[Any], None]
) -> None:
    problems = _forge(
        genuine, tmp_path, lambda out: _edit_json(out / "table_manifest.json", change)
    )
    assert any("table_manifest.json: entry" in p for p in problems), problems


def test_i4_figure_titles_and_renderer_claims(genuine: tuple[Path, str], tmp_path: Path) -> None:
    problems = _forge(
        genuine,
        tmp_path,
        lambda out: _edit_json(
            out / "figure_manifest.json",
            lambda m: m["figures"]["funnel"].update(title="A funnel that promotes everyone"),
        ),
    )
    assert any("figure_manifest.json: entry 'funnel'" in p for p in problems), problems
    # Another renderer claimed, a figure replaced: the images are listed as not checked
    # (their data still is); with this matplotlib claimed, the replaced image fails.
    bundle, head = genuine
    for claim, expect_ok in (("0.0-forged", True), (None, False)):
        out = tmp_path / f"renderer-{claim}"
        shutil.copytree(bundle, out)
        shutil.copy(out / "figures" / "budget.png", out / "figures" / "funnel.png")
        if claim:
            _edit_json(
                out / "figure_manifest.json", lambda m, c=claim: m["renderer"].update(matplotlib=c)
            )
        write_manifests(out)
        report = verify_bundle(out, expect=head, images=True)
        assert report.ok is expect_ok, report.problems
        if expect_ok:
            assert any("images not compared" in u and claim in u for u in report.unchecked)
            proc = run_cli("verify", out, "--expect", head)
            assert "informational (not checked): figures/*.png" in proc.stdout
        else:
            assert any("figures/funnel.png: differs" in p for p in report.problems)


# --------------------------------------------------------------------------- item 5


def test_i5_a_fifo_does_not_hang_verify(genuine: tuple[Path, str], tmp_path: Path) -> None:
    bundle, head = genuine
    out = tmp_path / "fifo"
    shutil.copytree(bundle, out)
    os.mkfifo(out / "tables" / "pipe.csv")
    start = time.monotonic()
    proc = run_cli("verify", out, "--expect", head)
    assert time.monotonic() - start < 120
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "tables/pipe.csv: a FIFO, not a regular file" in proc.stdout


@pytest.mark.parametrize("target", ["/dev/zero", "/etc/hostname", "OUTSIDE"])
def test_i5_no_link_is_followed(genuine: tuple[Path, str], tmp_path: Path, target: str) -> None:
    bundle, head = genuine
    out = tmp_path / "links"
    shutil.copytree(bundle, out)
    if target == "OUTSIDE":  # a folder of the bundle replaced by a link to one outside it
        outside = tmp_path / "outside"
        shutil.copytree(out / "tables", outside)
        shutil.rmtree(out / "tables")
        (out / "tables").symlink_to(outside, target_is_directory=True)
        name = "tables"
    else:
        (out / "figures" / "funnel.png").unlink()
        (out / "figures" / "funnel.png").symlink_to(target)
        name = "figures/funnel.png"
    write_manifests(out)
    proc = run_cli("verify", out, "--expect", head)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{name}: a symbolic link, not a regular file" in proc.stdout


def test_i5_members_are_size_bounded(
    genuine: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stagewise.audit.verify.MAX_MEMBER_BYTES", 1000)
    problems = verify_bundle(genuine[0], expect=genuine[1], images=False).problems
    assert any("over the 1000 limit" in p for p in problems), problems
    assert problems[-1].startswith("refused before reading")


def test_i5_deep_or_huge_json_is_one_problem(genuine: tuple[Path, str], tmp_path: Path) -> None:
    for name, text in (("deep", "[" * 100_000 + "]" * 100_000), ("huge", "1" * 5000)):
        problems = _forge(
            genuine,
            tmp_path / name,
            lambda out, t=text: (out / "ledger" / "commitments.json").write_text(t),
        )
        assert any("commitments.json" in p for p in problems), problems


# --------------------------------------------------------------------------- item 6


def test_i6_host_blocks_named_like_the_machine_and_the_user_verify(
    paper06: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine is named like a host block of the study, and so is the user: scrubbing must
    not change a single decided id or number."""
    monkeypatch.setattr("stagewise.audit.scrub._host", lambda: "linux-l40s")
    monkeypatch.setattr("stagewise.audit.scrub._user", lambda: "windows-a100")
    result = write_bundle(paper06, tmp_path / "B")
    report = verify_bundle(tmp_path / "B", expect=result.chain_head, images=False)
    assert report.ok, report.problems[:5]
    runs = json.loads((tmp_path / "B" / "results" / "runs.json").read_text())["runs"]
    assert {r["host"] for r in runs} == {"linux-l40s", "windows-a100"}


# --------------------------------------------------------------------------- item 12


# Files whose every byte verify proves against the chain or re-derives from what it proves.
# README.md, study/ (inputs: checked where frozen) and the images (compared only when drawn
# by this matplotlib) are what verify lists as not checked.
def _committed_files(bundle: Path) -> list[str]:
    out = []
    for path in sorted(bundle.rglob("*")):
        rel = path.relative_to(bundle).as_posix()
        if not path.is_file() or rel in ("MANIFEST.json", "MANIFEST.csv", "README.md"):
            continue
        if rel.startswith("study/") or path.suffix in (".png", ".svg"):
            continue
        if rel.startswith("figures/learning_curve"):
            continue
        out.append(rel)
    return out


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(data=st.data())
def test_i12_any_edit_of_a_committed_byte_fails_verify(
    genuine: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    bundle, head = genuine
    files = _committed_files(bundle)
    rel = data.draw(st.sampled_from(files), label="file")
    raw = (bundle / rel).read_bytes()
    pos = data.draw(st.integers(0, len(raw) - 1), label="byte")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]), label="value")
    out = tmp_path_factory.mktemp("prop") / "B"
    shutil.copytree(bundle, out)
    (out / rel).write_bytes(raw[:pos] + bytes([new]) + raw[pos + 1 :])
    write_manifests(out)
    report = verify_bundle(out, expect=head, images=False)
    assert not report.ok, (rel, pos, raw[max(0, pos - 20) : pos + 20], new)


def test_i12_the_genuine_bundle_is_not_refused_for_its_own_files(
    genuine: tuple[Path, str],
) -> None:
    """The property above is not vacuous: the genuine bundle passes, its committed files are
    many, and each is read-only here (the tests edit copies)."""
    bundle, head = genuine
    assert verify_bundle(bundle, expect=head, images=False).ok
    assert len(_committed_files(bundle)) > 40
    assert all(stat.S_ISREG((bundle / r).stat().st_mode) for r in _committed_files(bundle))
