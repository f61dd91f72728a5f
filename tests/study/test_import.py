from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from stagewise.errors import ImportRejected
from stagewise.executors.external import import_results
from stagewise.ledger import Ledger, RunKey
from stagewise.protocol import parse_block
from stagewise.study import load_study

HEADER = "stage,condition_id,seed,host,val_bpb\n"
GOOD = HEADER + "".join(
    f"s1,{c},{seed},{h},{1.0 + i / 100:.6f}\n"
    for i, (c, seed, h) in enumerate(
        (c, s, h) for c in ("c_a", "c_b", "c_c") for s in (1, 2) for h in ("block-a", "block-b")
    )
)


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "ledger.sqlite").read_bytes()).hexdigest()


def test_import_is_idempotent(tiny_study: Path, tmp_path: Path) -> None:
    study = load_study(tiny_study)
    results = tmp_path / "r.csv"
    results.write_text(GOOD)
    with Ledger.open(tiny_study) as ledger:
        assert import_results(study, ledger, [results])[0][1:] == (12, 0)
    before = _digest(tiny_study)
    with Ledger.open(tiny_study) as ledger:
        assert import_results(study, ledger, [results])[0][1:] == (0, 12)
        assert len(ledger.runs(stage="s1", status="succeeded")) == 12
    assert _digest(tiny_study) == before


BAD_ROWS = [
    ("s9,c_a,1,block-a,1.0", "stage: unknown stage 's9'"),
    ("s1,c_zz,1,block-a,1.0", "unknown condition 'c_zz'"),
    ("s1,c_a,1,nowhere,1.0", "unknown host 'nowhere'"),
    ("s1,c_a,7,block-a,1.0", "plans seeds [1, 2]"),
    ("s1,c_a,x,block-a,1.0", "seed must be a number"),
    ("s1,c_a,1,block-a,nan", "val_bpb must be finite"),
    ("s1,c_a,1,block-a,", "a succeeded row needs a finite val_bpb"),
    ("s1,c_a,1,block-a,1.0\ns1,c_a,1,block-a,1.1", "row 4: conflicting duplicate of row 3"),
    ("s2,c_a,3,block-a,1.0", "gate g1 has not been decided"),
]


@pytest.mark.parametrize(("rows", "fragment"), BAD_ROWS)
def test_bad_file_is_refused_whole(
    tiny_study: Path, tmp_path: Path, rows: str, fragment: str
) -> None:
    study = load_study(tiny_study)
    seeded = tmp_path / "seed.csv"
    seeded.write_text(HEADER + "s1,c_b,2,block-b,1.5\n")
    with Ledger.open(tiny_study) as ledger:
        import_results(study, ledger, [seeded])
    before = _digest(tiny_study)
    bad = tmp_path / "bad.csv"
    # A good row first: it must not be recorded either.
    bad.write_text(HEADER + "s1,c_c,1,block-a,1.2\n" + rows + "\n")
    with Ledger.open(tiny_study) as ledger, pytest.raises(ImportRejected) as info:
        import_results(study, ledger, [bad])
    assert fragment in str(info.value)
    assert "bad.csv" in str(info.value)
    assert _digest(tiny_study) == before


def test_conflict_with_recorded_result_is_refused(tiny_study: Path, tmp_path: Path) -> None:
    study = load_study(tiny_study)
    first = tmp_path / "a.csv"
    first.write_text(HEADER + "s1,c_a,1,block-a,1.0\n")
    second = tmp_path / "b.csv"
    second.write_text(HEADER + "s1,c_b,1,block-a,1.3\ns1,c_a,1,block-a,1.01\n")
    with Ledger.open(tiny_study) as ledger:
        import_results(study, ledger, [first])
    before = _digest(tiny_study)
    with (
        Ledger.open(tiny_study) as ledger,
        pytest.raises(ImportRejected, match="never overwritten"),
    ):
        import_results(study, ledger, [second])
    assert _digest(tiny_study) == before


def test_failed_rows_summary_json_and_logs(tiny_study: Path, tmp_path: Path) -> None:
    study = load_study(tiny_study)
    failed = tmp_path / "f.csv"
    failed.write_text(
        "stage,condition_id,seed,host,val_bpb,status,cause\ns1,c_a,1,block-a,,failed,OOM\n"
    )
    summary = tmp_path / "summary.json"
    summary.write_text(
        json.dumps(
            {
                "stage": "s1",
                "condition_id": "c_b",
                "seed": 1,
                "host": "block-a",
                "status": "succeeded",
                "val_bpb": 1.11,
                "training_seconds": 4.0,
                "num_params_M": 0.5,
            }
        )
    )
    log = tmp_path / "run.log"
    log.write_text(
        "step 1 ...\n---\nval_bpb:          1.234567\ntraining_seconds: 4.1\nnum_steps:        12\n"
    )
    with Ledger.open(tiny_study) as ledger:
        import_results(study, ledger, [failed, summary])
        import_results(
            study,
            ledger,
            [log],
            {"stage": "s1", "condition_id": "c_c", "seed": 2, "host": "block-b"},
        )
        runs = {r.key: r for r in ledger.runs()}
    assert runs[RunKey("s1", "c_a", 1, "block-a")].status == "failed"
    assert runs[RunKey("s1", "c_a", 1, "block-a")].cause == "OOM"
    assert runs[RunKey("s1", "c_b", 1, "block-a")].num_params_M == 0.5
    logged = runs[RunKey("s1", "c_c", 2, "block-b")]
    assert logged.val_bpb == pytest.approx(1.234567) and logged.num_steps == 12


def test_summary_block_parser_takes_the_last_block() -> None:
    text = "---\nval_bpb: 9\n\nnoise\n---\nval_bpb: 1.5\ndepth: 4\ntrailing text here\n"
    assert parse_block(text) == {"val_bpb": 1.5, "depth": 4.0}
