from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from stagewise.runner.summary import BLOCK_FIELDS, format_block, parse_block, round_fields

finite = st.floats(min_value=0, max_value=1e6, allow_nan=False)
values = st.fixed_dictionaries(
    {
        key: (st.integers(0, 10**6) if decimals is None else st.one_of(st.none(), finite))
        for key, decimals in BLOCK_FIELDS
    }
)


@given(values)
def test_block_round_trip(raw: dict[str, float | int | None]) -> None:
    """What a log parser reads from the block equals what summary.json stores."""
    rounded = round_fields(raw)
    assert parse_block("some log\n" + format_block(rounded) + "\n") == rounded


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


def test_last_block_wins() -> None:
    text = "---\nval_bpb: 1.0\n" + format_block(round_fields({"val_bpb": 2.0, "depth": 4}))
    assert parse_block(text)["val_bpb"] == 2.0
