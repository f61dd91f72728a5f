"""The audit bundle: scrubbed of paths, user and host names; verify catches any tampering."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from stagewise.audit.bundle import MANIFEST_JSON, write_bundle, write_manifests
from stagewise.audit.scrub import Scrubber
from stagewise.audit.verify import verify_bundle
from stagewise.ledger import sha256_text
from tests.conftest import run_cli
from tests.report.conftest import planted


@pytest.fixture(scope="module")
def p06_bundle(paper06: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One paper06 bundle, built once; tests tamper with copies of it."""
    out = tmp_path_factory.mktemp("bundle") / "B"
    write_bundle(paper06, out)
    return out


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "B"
    shutil.copytree(bundle, out)
    return out


def _text_files(bundle: Path) -> list[Path]:
    return [p for p in sorted(bundle.rglob("*")) if p.is_file() and p.suffix != ".png"]


@pytest.fixture
def synthetic_bundle(synthetic: Path, tmp_path: Path) -> Path:
    out = tmp_path / "B"
    result = write_bundle(synthetic, out)
    assert result.leaks == []
    return out


def test_bundle_scrubs_paths_users_and_hosts(synthetic: Path, synthetic_bundle: Path) -> None:
    plant = planted()
    forbidden = [
        plant["path"],
        "secret-logs",
        plant["user"],
        plant["host"],
        str(synthetic),
        str(synthetic.resolve()),
    ]
    for path in _text_files(synthetic_bundle):
        text = path.read_text(encoding="utf-8")
        for needle in forbidden:
            assert needle not in text, f"{needle!r} in {path.relative_to(synthetic_bundle)}"
        # No absolute path of any kind.
        assert not re.search(r"(?<![\w<>.:/])/(?:home|root|tmp|Users|var)/", text), path
    runs = json.loads((synthetic_bundle / "results" / "runs.json").read_text())
    assert "log_path" not in runs["columns"] and "summary_json" not in runs["columns"]
    assert "owner" not in runs["columns"]
    # Host *block* names stay; the failed run's cause names the machine, so it is withheld:
    # shown as the hash of its masked form, which the chain committed to (issue 30).
    hosts = {r["host"] for r in runs["runs"]}
    assert hosts == {"block-a", "block-b"}
    causes = [r["cause"] for r in runs["runs"] if r["stage"] == "s2"]
    masked = "crashed on " + plant["host"] + ": see <path>/train.log"
    assert causes == [f"<withheld sha256:{sha256_text(masked)}>"]
    assert verify_bundle(synthetic_bundle, images=False).ok


def test_bundle_layout_and_manifests(paper06: Path, p06_bundle: Path, tmp_path: Path) -> None:
    out = _copy(p06_bundle, tmp_path)
    for rel in (
        "README.md",
        "study/study.toml",
        "study/matrix.csv",
        "study/published/stage2_60min_pooled.csv",
        "results/runs.csv",
        "frozen/g12h.json",
        "decisions/decisions.json",
        "ledger/events.json",
        "tables/gate_g12h.csv",
        "tables/sensitivity_g12h.json",
        "tables/budget.csv",
        "figures/funnel.svg",
        "table_manifest.json",
        "figure_manifest.json",
        "MANIFEST.csv",
    ):
        assert (out / rel).is_file(), rel
    manifest = json.loads((out / MANIFEST_JSON).read_text())
    listed = {e["path"] for e in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert listed == on_disk - {"MANIFEST.json", "MANIFEST.csv"}
    tables = json.loads((out / "table_manifest.json").read_text())["tables"]
    assert "results/runs.csv" in tables["gate_g12h"]["sources"]
    assert tables["gate_g12h"]["command"] == "stagewise gate STUDY g12h --json"
    assert tables["published_stage2_60min_pooled"]["published_summary"] is True
    figures = json.loads((out / "figure_manifest.json").read_text())["figures"]
    assert figures["funnel"]["files"] == ["figures/funnel.png", "figures/funnel.svg"]
    frozen = json.loads((out / "frozen" / "g12h.json").read_text())
    assert frozen["records"][0]["canonical_scrubbed"] is False
    # Deterministic: a second bundle of the same study is byte-identical.
    out2 = tmp_path / "B2"
    write_bundle(paper06, out2)
    assert (out / MANIFEST_JSON).read_bytes() == (out2 / MANIFEST_JSON).read_bytes()
    # A rebundle into the same folder replaces it; a foreign non-empty folder is refused.
    write_bundle(paper06, out)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("x")
    proc = run_cli("bundle", paper06, "--out", foreign)
    assert proc.returncode != 0 and "holds no bundle" in proc.stderr


def test_fresh_bundle_verifies(p06_bundle: Path, tmp_path: Path) -> None:
    out = _copy(p06_bundle, tmp_path)
    proc = run_cli("verify", out)
    assert proc.returncode == 0, proc.stdout
    assert proc.stdout.startswith("OK:")
    report = verify_bundle(out)
    assert report.frozen == 1 and report.rederived >= 3 and report.events > 0


def _acceptance_tamper(path: Path) -> bool:
    """What the acceptance check does: the first digit of line 2 becomes 9."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if len(lines) < 2:
        return False
    new = re.sub(r"[0-9]", "9", lines[1], count=1)
    if new == lines[1]:
        return False
    lines[1] = new
    path.write_text("\n".join(lines), encoding="utf-8")
    return True


def test_any_tampered_csv_fails_verify(p06_bundle: Path, tmp_path: Path) -> None:
    out = _copy(p06_bundle, tmp_path)
    csvs = [p for p in sorted(out.rglob("*.csv")) if p.name != "MANIFEST.csv"]
    assert len(csvs) > 10
    for path in csvs:
        original = path.read_bytes()
        # Every CSV has a second line whose first digit is not already 9.
        assert _acceptance_tamper(path), path.relative_to(out)
        report = verify_bundle(out, images=False)  # a CSV is data: no need to re-draw
        assert not report.ok
        rel = path.relative_to(out).as_posix()
        assert any(rel in p for p in report.problems), report.problems
        path.write_bytes(original)
    assert verify_bundle(out, images=False).ok


def test_tampering_is_reported(p06_bundle: Path, tmp_path: Path) -> None:
    out = _copy(p06_bundle, tmp_path)
    # One byte of a figure.
    png = out / "figures" / "funnel.png"
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0x01
    png.write_bytes(bytes(data))
    problems = verify_bundle(out).problems
    assert any("changed file: figures/funnel.png" in p for p in problems)
    # Missing and extra files.
    shutil.copy(out / "README.md", out / "extra.md")
    (out / "tables" / "plan.json").unlink()
    problems = verify_bundle(out).problems
    assert any("extra file not in the manifest: extra.md" in p for p in problems)
    assert any("missing file: tables/plan.json" in p for p in problems)


def test_consistent_forgery_is_caught_by_rederivation(p06_bundle: Path, tmp_path: Path) -> None:
    """A forger who edits a result and rewrites the manifests is caught by re-deriving."""
    out = _copy(p06_bundle, tmp_path)
    runs_path = out / "results" / "runs.json"
    runs = json.loads(runs_path.read_text())
    for row in runs["runs"]:
        if row["condition_id"] == "p06_greedy_winner" and row["seed"] == 46:
            row["val_bpb"] -= 0.01
    runs_path.write_text(json.dumps(runs, indent=2, sort_keys=True) + "\n")
    write_manifests(out)
    report = verify_bundle(out)
    assert not report.ok
    assert any("tables/gate_g12h.json" in p and "mean_val_bpb" in p for p in report.problems)
    assert any("tables/cells_g12h.json" in p for p in report.problems)


def test_frozen_hash_is_rechecked(p06_bundle: Path, tmp_path: Path) -> None:
    out = _copy(p06_bundle, tmp_path)
    path = out / "frozen" / "g12h.json"
    rec = json.loads(path.read_text())
    rec["records"][0]["canonical"] = rec["records"][0]["canonical"].replace("0.01", "0.03")
    path.write_text(json.dumps(rec, indent=2, sort_keys=True) + "\n")
    write_manifests(out)
    problems = verify_bundle(out).problems
    assert any("canonical JSON does not hash" in p for p in problems)


def test_scrubber_rules(tmp_path: Path) -> None:
    scrub = Scrubber([tmp_path / "study"])
    # Every absolute path is cut the same way, on every machine (the chain commits to it).
    assert scrub.text(f"{tmp_path}/study/results/x.csv") == "<path>/x.csv"
    assert scrub.text("/opt/data/shard_00001.parquet") == "<path>/shard_00001.parquet"
    assert scrub.text(r"C:\Users\ann\runs\train.log") == "<path>/train.log"
    # Ratios, labels, block names and URLs stay.
    for keep in ("d8/ar48", "4/4", "linux-l40s", "https://arxiv.org/abs/2606.11387"):
        assert scrub.text(keep) == keep
    plant = planted()
    assert plant["host"] not in scrub.text(f"on {plant['host']}.")
    assert scrub.value({"k": [f"{plant['user']}@x"]}) == {"k": ["<user>@x"]}
    # Whole tokens only (`-` and `_` belong to a token); URL-encoded and file:// paths too.
    word = f"{plant['host']}cond"
    assert scrub.text(f"{word} {plant['user']}-box") == f"{word} {plant['user']}-box"
    assert scrub.leaks(word) == []
    assert scrub.text("see %2Ftmp%2Fa%2Ftrain.log") == "see <path>%2Ftrain.log"
    assert scrub.text("file:///tmp/a/b.csv") == "file://<path>/b.csv"
    # A declared id equal to the host name is never scrubbed (issue 30: scrubbing never
    # changes what was decided), nor listed as a leak.
    ids = Scrubber([tmp_path], ids=[plant["host"]])
    assert ids.text(f"[hosts.{plant['host']}]") == f"[hosts.{plant['host']}]"
    assert ids.leaks(plant["host"]) == []


def test_a_study_opened_by_a_relative_path_keeps_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stagewise bundle demo` from the study's parent: the folder's absolute path is scrubbed,
    but the bare word `demo` (the study's own name, say) is not a path and stays."""
    (tmp_path / "demo").mkdir()
    monkeypatch.chdir(tmp_path)
    scrub = Scrubber([Path("demo")])
    assert scrub.text('name = "demo"') == 'name = "demo"'
    assert scrub.text(f"{tmp_path / 'demo'}/runs/x.log") == "<path>/x.log"
