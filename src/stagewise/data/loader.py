"""The BOS-aligned best-fit packing dataloader, over a pre-tokenised shard cache.

Packing (autoresearch's rule): every row of T+1 tokens starts at a document boundary (each
document is BOS + its tokens); while a row has room, place the longest buffered document that
fits entirely; when none fits, crop the shortest buffered document to fill the row exactly and
drop its tail. Rows are always full and there is no padding, so no compute is spent on pad
tokens and no document straddles two rows (attention never crosses into an unrelated row).
The buffer is topped up to `buffer_size` documents, a tokeniser batch at a time, before each
choice; ties go to the document that entered the buffer first.

Speed: the straightforward implementation tokenises while it packs and scans the whole buffer
for every placement. Here documents are tokenised once into a cache in the data folder
(`tokens/shard_XXXXX.*.npy`), and the buffer is a sorted list of integer keys
(length << SEQ_BITS | arrival), so "longest that fits" is one bisect and "first arrival among
equal lengths" is a second. The output is identical to the straightforward algorithm (tested).
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stagewise.data import shards as shards_mod
from stagewise.errors import DataError

BUFFER_SIZE = 1000  # autoresearch's buffer: large enough that best-fit rarely has to crop
TOKENIZER_BATCH = 128  # documents per refill, as autoresearch hands them to the tokeniser
SEQ_BITS = 40  # low bits of a buffer key: arrival order (2^40 documents is never reached)
CACHE_DIR = "tokens"
TOKENIZER_DIR = "tokenizer"

DocBatches = Iterator[tuple[Sequence[np.ndarray], int]]


# ---------------------------------------------------------------------------
# Token cache: one flat array per shard (BOS + tokens per document) plus offsets
# ---------------------------------------------------------------------------


def cache_paths(data_dir: Path, shard: Path) -> tuple[Path, Path, Path]:
    stem = data_dir / CACHE_DIR / shard.stem
    return (
        stem.with_name(stem.name + ".tokens.npy"),
        stem.with_name(stem.name + ".offsets.npy"),
        stem.with_name(stem.name + ".groups.npy"),
    )


def token_dtype(vocab_size: int) -> type[np.unsignedinteger[Any]]:
    # uint16 halves the cache and the page-cache footprint for every vocab up to 65536.
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def build_token_cache(data_dir: Path, shard: Path, enc: Any) -> None:
    """Tokenise one shard (BOS-prefixed documents) into the cache, atomically."""
    from stagewise.data.tokenizer import bos_id

    bos = bos_id(enc)
    dtype = token_dtype(enc.n_vocab)
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    groups: list[int] = []
    for texts in shards_mod.iter_row_groups(shard):
        groups.append(len(texts))
        for ids in enc.encode_ordinary_batch(texts):
            pieces.append(np.asarray([bos, *ids], dtype=dtype))
            lengths.append(len(ids) + 1)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tok_path, off_path, grp_path = cache_paths(data_dir, shard)
    tok_path.parent.mkdir(parents=True, exist_ok=True)
    for path, array in (
        (off_path, offsets),
        (grp_path, np.asarray(groups, dtype=np.int64)),
        (tok_path, tokens),
    ):
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # no global RNG use
        with tmp.open("wb") as f:
            np.save(f, array)
        tmp.replace(path)  # tokens last: its presence marks a complete cache entry


def load_token_cache(data_dir: Path, shard: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tok_path, off_path, grp_path = cache_paths(data_dir, shard)
    if not tok_path.is_file():
        from stagewise.data.tokenizer import load_tokenizer

        build_token_cache(data_dir, shard, load_tokenizer(data_dir / TOKENIZER_DIR))
    return np.load(tok_path, mmap_mode="r"), np.load(off_path), np.load(grp_path)


def cached_document_batches(data_dir: Path, split: str) -> DocBatches:
    """Endless (documents, epoch) batches in shard / row-group order, as the tokeniser saw them."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', but got {split!r}")
    train, val = shards_mod.split_shards(shards_mod.list_shards(data_dir))
    paths = train if split == "train" else [val]
    epoch = 1
    while True:
        produced = 0
        for shard in paths:
            tokens, offsets, groups = load_token_cache(data_dir, shard)
            tokens = np.asarray(tokens)  # one read per shard; slices below are views
            doc = 0
            for group_docs in groups.tolist():
                for start in range(0, group_docs, TOKENIZER_BATCH):
                    n = min(TOKENIZER_BATCH, group_docs - start)
                    first = doc + start
                    batch = [tokens[offsets[i] : offsets[i + 1]] for i in range(first, first + n)]
                    produced += n
                    yield batch, epoch
                doc += group_docs
        if produced == 0:
            raise DataError(f"{data_dir}: the {split} shards hold no documents")
        epoch += 1


# ---------------------------------------------------------------------------
# Best-fit packing
# ---------------------------------------------------------------------------


class BestFitPacker:
    """Packs rows of `row_len` tokens from document batches; see the module docstring."""

    def __init__(self, batches: DocBatches, row_len: int, buffer_size: int = BUFFER_SIZE) -> None:
        self._batches = batches
        self.row_len = row_len
        self.buffer_size = buffer_size
        self._keys: list[int] = []  # sorted: (length << SEQ_BITS) | arrival
        self._docs: dict[int, np.ndarray] = {}  # arrival -> tokens
        self._arrivals = 0
        self.epoch = 1

    def _refill(self) -> None:
        docs, self.epoch = next(self._batches)
        for doc in docs:
            if len(doc) == 0:
                continue  # never produced by the cache (BOS is always there); guards bad input
            seq = self._arrivals
            self._arrivals += 1
            self._docs[seq] = doc
            bisect.insort(self._keys, (len(doc) << SEQ_BITS) | seq)

    def fill_row(self, row: np.ndarray) -> None:
        keys, docs, cap = self._keys, self._docs, self.row_len
        pos = 0
        while pos < cap:
            while len(keys) < self.buffer_size:
                self._refill()
            remaining = cap - pos
            i = bisect.bisect_right(keys, (remaining << SEQ_BITS) | ((1 << SEQ_BITS) - 1))
            if i > 0:
                length = keys[i - 1] >> SEQ_BITS
                j = bisect.bisect_left(keys, length << SEQ_BITS)  # first arrival of that length
                doc = docs.pop(keys.pop(j) & ((1 << SEQ_BITS) - 1))
                row[pos : pos + length] = doc
                pos += length
            else:  # nothing fits: crop the shortest (earliest among equals) to fill the row
                doc = docs.pop(keys.pop(0) & ((1 << SEQ_BITS) - 1))
                row[pos:cap] = doc[:remaining]
                pos = cap

    def next_rows(self, n_rows: int) -> np.ndarray:
        rows = np.empty((n_rows, self.row_len), dtype=np.int64)
        for r in range(n_rows):
            self.fill_row(rows[r])
        return rows


def make_loader(
    data_dir: Path, split: str, batch_size: int, seq_len: int, device: Any = "cpu"
) -> Iterator[tuple[Any, Any, int]]:
    """Endless (inputs, targets, epoch) on `device`: inputs row[:-1], targets row[1:]."""
    import torch

    packer = BestFitPacker(cached_document_batches(data_dir, split), seq_len + 1)
    dev = torch.device(device)
    pin = dev.type == "cuda"
    while True:
        rows = torch.from_numpy(packer.next_rows(batch_size))
        if pin:
            rows = rows.pin_memory().to(dev, non_blocking=True)
        # Contiguous copies: the loss flattens targets with view(), which needs contiguity.
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous(), packer.epoch
