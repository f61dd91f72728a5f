"""The runner <-> executor protocol: every writer read back by its reader, and what is refused."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stagewise.protocol import (
    BLOCK_FIELDS,
    BlockError,
    Progress,
    finished_summary,
    format_block,
    format_progress,
    normalize_fields,
    parse_block,
    parse_progress,
    parse_worker_done,
    parse_worker_request,
    read_summary,
    round_fields,
    train_args,
    worker_done,
    worker_request,
    write_summary,
)

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)
values = st.fixed_dictionaries(
    {
        key: (st.integers(0, 10**6) if decimals is None else st.one_of(st.none(), finite))
        for key, decimals in BLOCK_FIELDS
    }
)
noise = st.text(st.characters(blacklist_characters="-\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))


@given(values, st.lists(noise, max_size=3))
def test_block_round_trip(raw: dict[str, float | int | None], before: list[str]) -> None:
    """What a log parser reads from the block equals what summary.json stores, rounded."""
    rounded = round_fields(raw)
    log = "\n".join([*before, format_block(rounded)]) + "\n"
    assert parse_block(log) == rounded


@given(values)
def test_summary_json_round_trip(raw: dict[str, float | int | None]) -> None:
    import tempfile

    stored = normalize_fields(raw)
    with tempfile.TemporaryDirectory() as tmp:
        write_summary(Path(tmp), {"status": "succeeded", **stored})
        back = read_summary(Path(tmp))
    assert {k: back[k] for k in stored} == stored
    assert round_fields(back) == {"status": "succeeded", **round_fields(raw)}


progress_lines = st.builds(
    Progress,
    step=st.integers(0, 10**7),
    progress=st.floats(0, 1),
    loss=st.one_of(st.none(), st.floats(0, 100)),
    tok_per_s=st.one_of(st.none(), st.floats(0, 1e7)),
    mfu=st.one_of(st.none(), st.floats(0, 100)),
    remaining_s=st.one_of(st.none(), st.floats(0, 1e5)),
)


@given(progress_lines)
def test_progress_round_trip(p: Progress) -> None:
    back = parse_progress(format_progress(p) + "\n")
    assert back is not None and back.step == p.step
    for name, decimals in (
        ("progress", 4),
        ("loss", 6),
        ("tok_per_s", 1),
        ("mfu", 2),
        ("remaining_s", 1),
    ):
        want, got = getattr(p, name), getattr(back, name)
        if want is None:
            assert got is None or (name == "progress" and got == 0.0)
        else:
            assert got == pytest.approx(want, abs=0.51 * 10**-decimals), name


def test_not_progress_lines() -> None:
    assert parse_progress("step 12 loss 4") is None
    assert parse_progress("progress: loss=1") is None
    assert parse_progress("progress: step=1.5 progress=0.1") is None


def test_autoresearch_layout() -> None:
    block = format_block(
        round_fields(
            {
                "val_bpb": 0.9979,
                "training_seconds": 300.1,
                "total_seconds": 325.9,
                "peak_vram_mb": 45060.2,
                "mfu_percent": 39.8,
                "total_tokens_M": 499.6,
                "num_steps": 953,
                "num_params_M": 50.3,
                "depth": 8,
            }
        )
    )
    assert block.splitlines() == [
        "---",
        "val_bpb:          0.997900",
        "training_seconds: 300.1",
        "total_seconds:    325.9",
        "peak_vram_mb:     45060.2",
        "mfu_percent:      39.80",
        "total_tokens_M:   499.6",
        "num_steps:        953",
        "num_params_M:     50.3",
        "depth:            8",
    ]


def test_unknown_is_nan_in_block_and_null_in_json() -> None:
    rounded = round_fields({"mfu_percent": math.nan})
    assert rounded["mfu_percent"] is None
    assert "mfu_percent:      nan" in format_block(rounded)
    assert parse_block(format_block(rounded) + "\n")["mfu_percent"] is None


def test_last_block_wins_and_ends_at_other_output() -> None:
    text = "---\nval_bpb: 1.0\n" + format_block(round_fields({"val_bpb": 2.0, "depth": 4}))
    assert parse_block(text + "\n")["val_bpb"] == 2.0
    other = "---\nval_bpb: 9\n\nnoise\n---\nval_bpb: 1.5\ndepth: 4\ntrailing text here\n"
    assert parse_block(other) == {"val_bpb": 1.5, "depth": 4}


@pytest.mark.parametrize(
    ("log", "problem"),
    [
        ("---\nval_bpb:          0.", "cut off"),
        ("---\nval_bpb:          0.\n", "finite number"),
        ("---\nval_bpb: 0.91\nnum_steps:  95", "cut off"),
        ("---\nval_bpb: inf\n", "finite"),
        ("---\nval_bpb: -Infinity\n", "finite"),
        ("---\nval_bpb: 1e999\n", "finite"),
        ("---\nnum_steps: 12.5\n", "integer"),
        ("---\ntraining_seconds: 3,5\n", "finite number"),
    ],
)
def test_untrustworthy_blocks_are_refused(log: str, problem: str) -> None:
    with pytest.raises(BlockError, match=problem):
        parse_block(log)


def test_a_complete_block_without_final_newline_elsewhere_is_read() -> None:
    # Text after the block ends it: a missing newline there does not cut the block.
    assert parse_block("---\nval_bpb: 1.25\nbye") == {"val_bpb": 1.25}
    assert parse_block("no block at all") == {}


def test_finished_summary(tmp_path: Path) -> None:
    assert finished_summary(tmp_path) is None
    write_summary(tmp_path, {"status": "succeeded", "val_bpb": 1.5})
    assert finished_summary(tmp_path) == {"status": "succeeded", "val_bpb": 1.5}
    write_summary(tmp_path, {"status": "succeeded", "val_bpb": None})
    assert finished_summary(tmp_path) is None
    write_summary(tmp_path, {"status": "diverged", "val_bpb": 1.5})
    assert finished_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert read_summary(tmp_path) == {} and finished_summary(tmp_path) is None


def test_the_protocol_needs_neither_torch_nor_the_rest_of_stagewise() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "import stagewise\n"
        "before = set(sys.modules)\n"
        "import stagewise.protocol\n"
        "added = sorted(m for m in set(sys.modules) - before if m.startswith('stagewise'))\n"
        "assert added == ['stagewise.protocol'], added\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@given(
    st.lists(st.text(), max_size=6),
    st.dictionaries(st.text(min_size=1), st.text(), max_size=4),
    st.text(),
)
def test_worker_request_round_trip(args: list[str], env: dict[str, str], cwd: str) -> None:
    line = worker_request(args, env, cwd)
    assert "\n" not in line  # one request per line, whatever the arguments hold
    assert parse_worker_request(line) == (args, env, cwd)


@given(st.integers(-255, 255))
def test_worker_done_round_trip(code: int) -> None:
    assert parse_worker_done(worker_done(code) + "\n") == code


def test_worker_lines_are_recognised_only_whole() -> None:
    assert parse_worker_done("@@stagewise-worker exit x") is None
    assert parse_worker_done("val_bpb: 1.0") is None
    with pytest.raises(ValueError, match="args must be a list of strings"):
        parse_worker_request('{"args": "--depth 2", "env": {}, "cwd": "."}')


def test_train_args_only_for_our_runner() -> None:
    assert train_args(["/py", "-m", "stagewise", "train", "--depth", "2"]) == ["--depth", "2"]
    assert train_args(["/py", "-m", "stagewise", "train"]) == []
    assert train_args(["/py", "-m", "stagewise", "params"]) is None
    assert train_args(["/py", "train.py", "--depth", "2"]) is None
