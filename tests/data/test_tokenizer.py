from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stagewise.data.loader import TOKENIZER_DIR
from stagewise.data.tokenizer import (
    BOS_TOKEN,
    SPECIAL_TOKENS,
    bos_id,
    load_token_bytes,
    load_tokenizer,
    train_tokenizer,
)
from stagewise.errors import DataError

from .conftest import SMALL_VOCAB

TEXTS = [
    "To be, or not to be, that is the question.",
    "Numbers 1234567 and 3.14159; unicode: naïve café, 你好, emoji 🎭.",
    "  leading spaces\n\nand\r\nnewlines\t tabs",
    "",
]


@pytest.fixture(scope="module")
def enc(sample_data: Path) -> Any:
    return load_tokenizer(sample_data / TOKENIZER_DIR)


def test_vocab_and_specials(enc: Any) -> None:
    assert enc.n_vocab == SMALL_VOCAB
    ids = [enc.encode_single_token(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(SMALL_VOCAB - 4, SMALL_VOCAB))  # appended after the merges
    assert bos_id(enc) == enc.encode_single_token(BOS_TOKEN) == SMALL_VOCAB - 4


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(enc: Any, text: str) -> None:
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_special_text_is_not_special_by_default(enc: Any) -> None:
    # Ordinary encoding never produces a special id, even for the literal marker text.
    ids = enc.encode_ordinary(BOS_TOKEN)
    assert bos_id(enc) not in ids


def test_token_bytes_table(sample_data: Path, enc: Any) -> None:
    table = load_token_bytes(sample_data / TOKENIZER_DIR)
    assert table.shape == (enc.n_vocab,)
    assert (table[-4:] == 0).all() and (table[:-4] >= 1).all()
    assert (table[:256] == 1).all()  # the byte-level base tokens
    for text in TEXTS:
        # Bytes of the tokens add up to the bytes of the text: the bpb denominator is exact.
        assert int(table[enc.encode_ordinary(text)].sum()) == len(text.encode("utf-8"))


def test_split_pattern_caps_digit_runs(enc: Any) -> None:
    pieces = [enc.decode([t]) for t in enc.encode_ordinary("1234567")]
    assert all(len(p) <= 2 for p in pieces)


def test_too_little_text_for_vocab() -> None:
    with pytest.raises(DataError, match="too little text"):
        train_tokenizer(["abc abc abc"] * 3, vocab_size=1024)


def test_empty_corpus() -> None:
    with pytest.raises(DataError, match="empty"):
        train_tokenizer([], vocab_size=300)


def test_vocab_below_bytes_plus_specials() -> None:
    with pytest.raises(DataError, match="at least"):
        train_tokenizer(["hello"], vocab_size=100)


def test_table_dtype(sample_data: Path) -> None:
    assert load_token_bytes(sample_data / TOKENIZER_DIR).dtype == np.int32
