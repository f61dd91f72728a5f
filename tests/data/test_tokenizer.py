from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stagewise.data.loader import TOKENIZER_DIR
from stagewise.data.tokenizer import (
    BOS_TOKEN,
    SPECIAL_TOKENS,
    TOKEN_BYTES_FILE,
    TOKEN_BYTES_META,
    bos_id,
    load_token_bytes,
    load_tokenizer,
    token_bytes_current,
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
    assert (table[:128] == 1).all()  # ASCII byte tokens
    assert (table[128:256] == 3).all()  # a lone byte >= 0x80 decodes to U+FFFD, as autoresearch
    for text in TEXTS:
        ids = enc.encode_ordinary(text)
        # autoresearch's count: each token's decoded text re-encoded, so never below the truth
        expect = sum(len(enc.decode([i]).encode("utf-8")) for i in ids)
        assert int(table[ids].sum()) == expect >= len(text.encode("utf-8"))
        if text.isascii():
            assert expect == len(text.encode("utf-8"))  # exact on ASCII


def test_stale_table_is_rebuilt(sample_data: Path, tmp_path: Path) -> None:
    """A folder prepared before the autoresearch byte count (raw bytes, no marker) is detected
    and its table rebuilt on load."""
    folder = tmp_path / "tokenizer"
    shutil.copytree(sample_data / TOKENIZER_DIR, folder)
    current = load_token_bytes(folder).copy()
    enc = load_tokenizer(folder)
    raw = np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], np.int32)
    raw[-4:] = 0
    np.save(folder / TOKEN_BYTES_FILE, raw)  # what an older stagewise wrote
    (folder / TOKEN_BYTES_META).unlink()
    assert not token_bytes_current(folder)
    assert (raw != current).any()
    assert load_token_bytes(folder).tolist() == current.tolist()
    assert token_bytes_current(folder)
    assert np.load(folder / TOKEN_BYTES_FILE).tolist() == current.tolist()  # persisted
    # an older version number in the marker counts as stale too
    meta = json.loads((folder / TOKEN_BYTES_META).read_text())
    (folder / TOKEN_BYTES_META).write_text(json.dumps({**meta, "version": 1}))
    assert not token_bytes_current(folder)
    assert load_token_bytes(folder).tolist() == current.tolist()


def test_stale_table_without_tokenizer_names_the_command(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "tokenizer"
    folder.mkdir(parents=True)
    np.save(folder / TOKEN_BYTES_FILE, np.ones(300, np.int32))
    with pytest.raises(DataError, match="stagewise data prepare --out"):
        load_token_bytes(folder)


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


def test_cli_run_on_a_stale_folder_rebuilds_the_table(sample_data: Path, tmp_path: Path) -> None:
    """End to end: `stagewise train` on a folder prepared by an older stagewise (raw byte
    table, no marker) runs, and leaves the table rebuilt with its marker."""
    from .conftest import stagewise

    data = tmp_path / "data"
    shutil.copytree(sample_data, data)
    folder = data / TOKENIZER_DIR
    current = np.load(folder / TOKEN_BYTES_FILE)
    enc = load_tokenizer(folder)
    raw = np.array([len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], np.int32)
    raw[-4:] = 0
    np.save(folder / TOKEN_BYTES_FILE, raw)
    (folder / TOKEN_BYTES_META).unlink()
    proc = stagewise(
        "train", "--depth", 1, "--aspect-ratio", 32, "--head-dim", 32, "--device", "cpu",
        "--sequence-len", 32, "--device-batch-size", 2, "--total-batch-size", 64,
        "--eval-tokens", 128, "--deterministic", "--steps", 1, "--data", data,
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert token_bytes_current(folder)
    assert np.load(folder / TOKEN_BYTES_FILE).tolist() == current.tolist()
