"""The BPE tokenizer: trained with `rustbpe`, used through `tiktoken`, plus the bytes table.

As in autoresearch: a GPT-4-style split pattern (digits in runs of at most two, so numbers do
not eat the small vocabulary), `vocab_size` counts 4 reserved special tokens appended after the
merges, and `<|reserved_0|>` is the BOS token that starts every document. The `token_bytes`
table (bytes per token id, 0 for special tokens) turns nats per token into bits per byte, a
metric that does not depend on the vocabulary.

Bytes are counted as autoresearch counts them: `len(decode([id]).encode("utf-8"))`. A token that
is not valid UTF-8 on its own (a byte token >= 0x80, a merge that stops inside a character)
decodes to U+FFFD, 3 bytes, per invalid sequence; so on non-ASCII text the denominator is not
the text's true byte count. It is what autoresearch and the paper divide by, and val_bpb is
their fixed metric. A table written before this definition (no marker beside it) is rebuilt
from the tokenizer when it is loaded.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from stagewise.errors import DataError

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}|"""
    r""" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = tuple(f"<|reserved_{i}|>" for i in range(4))
BOS_TOKEN = SPECIAL_TOKENS[0]
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)  # the 256 byte tokens cannot be merged away
MAX_TRAIN_CHARS = 1_000_000_000  # autoresearch's cap: enough text for a stable 8192 vocab
DOC_CAP_CHARS = 10_000  # long documents only repeat their pair statistics; cap each one
TOKENIZER_FILE = "tokenizer.pkl"
TOKEN_BYTES_FILE = "token_bytes.npy"
TOKEN_BYTES_META = "token_bytes.json"  # marks which definition wrote the table beside it
TOKEN_BYTES_DEFINITION = "utf8-of-decoded-token"  # len(enc.decode([id]).encode("utf-8"))
TOKEN_BYTES_VERSION = 2  # 1 (no marker): raw token bytes, which autoresearch does not count


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Train BPE on `texts` and return a `tiktoken.Encoding` with the special tokens appended."""
    import rustbpe
    import tiktoken

    if vocab_size < MIN_VOCAB + 1:
        raise DataError(f"vocab_size must be at least {MIN_VOCAB + 1}, but got {vocab_size}")
    n_merged = vocab_size - len(SPECIAL_TOKENS)
    stats = {"chars": 0}

    def capped() -> Iterator[str]:
        for text in texts:
            doc = text[:DOC_CAP_CHARS]
            stats["chars"] += len(doc)
            yield doc
            if stats["chars"] >= MAX_TRAIN_CHARS:
                return

    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(capped(), n_merged, pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in trainer.get_mergeable_ranks()}
    if stats["chars"] == 0:
        raise DataError("the training shards hold no text: the corpus is empty")
    if len(ranks) < n_merged:
        # rustbpe stops early when no pair occurs twice: the corpus cannot support this vocab.
        raise DataError(
            f"too little text ({stats['chars']:,} chars) for vocab_size={vocab_size}: only "
            f"{len(ranks) + len(SPECIAL_TOKENS)} tokens could be learned; use a smaller "
            f"--vocab-size or more data"
        )
    offset = len(ranks)
    return tiktoken.Encoding(
        name=f"stagewise-bpe-{vocab_size}",
        pat_str=trainer.get_pattern(),
        mergeable_ranks=ranks,
        special_tokens={name: offset + i for i, name in enumerate(SPECIAL_TOKENS)},
    )


def token_bytes_table(enc: Any) -> np.ndarray:
    """Bytes of each token id as autoresearch counts them; 0 for special tokens (out of val_bpb)."""
    table = np.zeros(enc.n_vocab, dtype=np.int32)
    # By id, not by text: an ordinary merge could spell "<|reserved_0|>" and still has bytes.
    special_ids = {enc.encode_single_token(name) for name in enc.special_tokens_set}
    for token_id in range(enc.n_vocab):
        if token_id not in special_ids:
            # decode() replaces invalid UTF-8 with U+FFFD (3 bytes): autoresearch's count.
            table[token_id] = len(enc.decode([token_id]).encode("utf-8"))
    return table


def save_tokenizer(enc: Any, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (TOKENIZER_FILE + ".tmp")
    with tmp.open("wb") as f:
        pickle.dump(enc, f)
    tmp.replace(folder / TOKENIZER_FILE)
    write_token_bytes(enc, folder)


def write_token_bytes(enc: Any, folder: Path) -> np.ndarray:
    """Write the table and its marker; atomic per file, so concurrent rebuilds are harmless."""
    table = token_bytes_table(enc)
    tag = f".{os.getpid()}.tmp"
    tmp_table = folder / (TOKEN_BYTES_FILE + tag)
    with tmp_table.open("wb") as f:
        np.save(f, table)
    tmp_table.replace(folder / TOKEN_BYTES_FILE)
    meta = {
        "definition": TOKEN_BYTES_DEFINITION,
        "version": TOKEN_BYTES_VERSION,
        "n_vocab": int(enc.n_vocab),
    }
    tmp_meta = folder / (TOKEN_BYTES_META + tag)
    tmp_meta.write_text(json.dumps(meta) + "\n")
    tmp_meta.replace(folder / TOKEN_BYTES_META)
    return table


def token_bytes_current(folder: Path) -> bool:
    """True when the table in `folder` was written with today's definition."""
    try:
        meta = json.loads((folder / TOKEN_BYTES_META).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(meta, dict)
        and meta.get("definition") == TOKEN_BYTES_DEFINITION
        and meta.get("version") == TOKEN_BYTES_VERSION
    )


def load_tokenizer(folder: Path) -> Any:
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(
            f"no tokenizer at {path}; run `stagewise data prepare --out {folder.parent}`"
        )
    with path.open("rb") as f:
        return pickle.load(f)


def load_token_bytes(folder: Path) -> np.ndarray:
    """The table of `folder`; one written before the current definition is rebuilt first."""
    path = folder / TOKEN_BYTES_FILE
    if not token_bytes_current(folder):
        # The table is a pure function of the tokenizer: rebuilding beats refusing to run.
        enc = load_tokenizer(folder)
        try:
            return write_token_bytes(enc, folder)
        except OSError as exc:
            raise DataError(
                f"{path} counts bytes with an old definition and cannot be rebuilt ({exc}); "
                f"make {folder} writable, or run `stagewise data prepare --out {folder.parent}`"
            ) from exc
    if not path.is_file():
        raise DataError(f"no token bytes table at {path}; rerun `stagewise data prepare`")
    table: np.ndarray = np.load(path)
    return table


def bos_id(enc: Any) -> int:
    return int(enc.encode_single_token(BOS_TOKEN))
