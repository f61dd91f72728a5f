"""The packing loader: invariants on real data, and identity with the straightforward packer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stagewise.data import shards as sh
from stagewise.data.loader import (
    TOKENIZER_DIR,
    BestFitPacker,
    cached_document_batches,
    make_loader,
)
from stagewise.data.tokenizer import bos_id, load_tokenizer


def reference_rows(
    batches: Iterator[tuple[Sequence[Sequence[int]], int]],
    row_len: int,
    n_rows: int,
    buffer_size: int,
) -> list[list[int]]:
    """Best-fit packing written the plain way: a list buffer scanned linearly per placement."""
    buffer: list[list[int]] = []
    rows = []
    for _ in range(n_rows):
        row: list[int] = []
        while len(row) < row_len:
            while len(buffer) < buffer_size:
                docs, _ = next(batches)
                buffer.extend(list(d) for d in docs)
            room = row_len - len(row)
            best = -1
            for i, doc in enumerate(buffer):
                if len(doc) <= room and (best < 0 or len(doc) > len(buffer[best])):
                    best = i
            if best >= 0:
                row.extend(buffer.pop(best))
            else:
                shortest = min(range(len(buffer)), key=lambda i: len(buffer[i]))
                row.extend(buffer.pop(shortest)[:room])
        rows.append(row)
    return rows


def _cycle(docs: list[list[int]], batch: int) -> Iterator[tuple[list[np.ndarray], int]]:
    epoch = 1
    while True:
        for i in range(0, len(docs), batch):
            yield [np.asarray(d, dtype=np.int64) for d in docs[i : i + batch]], epoch
        epoch += 1


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=60),
    row_len=st.integers(1, 50),
    buffer_size=st.integers(1, 12),
    batch=st.integers(1, 7),
)
def test_identical_to_reference(
    lengths: list[int], row_len: int, buffer_size: int, batch: int
) -> None:
    # Document k is [k, k, ...] of its length: any reordering or cropping difference shows.
    docs = [[k] * n for k, n in enumerate(lengths)]
    ours = BestFitPacker(_cycle(docs, batch), row_len, buffer_size).next_rows(8)
    ref = reference_rows(_cycle(docs, batch), row_len, 8, buffer_size)
    assert ours.tolist() == ref


def test_identical_to_reference_on_sample(sample_data: Path) -> None:
    enc = load_tokenizer(sample_data / TOKENIZER_DIR)
    bos = bos_id(enc)

    def tokenising_batches() -> Iterator[tuple[list[list[int]], int]]:
        train, _ = sh.split_shards(sh.list_shards(sample_data))
        while True:
            for shard in train:
                for texts in sh.iter_row_groups(shard):
                    for i in range(0, len(texts), 128):
                        yield (
                            [[bos, *ids] for ids in enc.encode_ordinary_batch(texts[i : i + 128])],
                            1,
                        )

    ours = BestFitPacker(cached_document_batches(sample_data, "train"), 257).next_rows(64)
    assert ours.tolist() == reference_rows(tokenising_batches(), 257, 64, 1000)


def test_rows_full_bos_aligned_no_padding(sample_data: Path) -> None:
    enc = load_tokenizer(sample_data / TOKENIZER_DIR)
    bos = bos_id(enc)
    loader = make_loader(sample_data, "val", batch_size=8, seq_len=64)
    for _ in range(20):
        x, y, epoch = next(loader)
        assert x.shape == y.shape == (8, 64) and x.dtype == torch.long
        assert (x[:, 0] == bos).all()  # every row starts a document
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
        assert (x >= 0).all() and (x < enc.n_vocab).all()  # real tokens only: no pad id
        assert x.is_contiguous() and y.is_contiguous()
    assert epoch >= 1


def test_rows_are_document_pieces(sample_data: Path) -> None:
    """Each BOS-delimited segment of a row is the start of some cached document."""
    docs = {
        tuple(d.tolist())
        for batch, _ in _first(cached_document_batches(sample_data, "val"), 5)
        for d in batch
    }
    prefixes = {d[:k] for d in docs for k in range(1, min(len(d), 65) + 1)}
    rows = BestFitPacker(cached_document_batches(sample_data, "val"), 65, 1000).next_rows(4)
    enc = load_tokenizer(sample_data / TOKENIZER_DIR)
    bos = bos_id(enc)
    for row in rows.tolist():
        starts = [i for i, t in enumerate(row) if t == bos] + [len(row)]
        for a, b in itertools.pairwise(starts):
            assert tuple(row[a:b]) in prefixes


def _first(
    it: Iterator[tuple[list[np.ndarray], int]], n: int
) -> list[tuple[list[np.ndarray], int]]:
    return [next(it) for _ in range(n)]


def test_cache_matches_direct_tokenisation(sample_data: Path) -> None:
    enc = load_tokenizer(sample_data / TOKENIZER_DIR)
    bos = bos_id(enc)
    _, val = sh.split_shards(sh.list_shards(sample_data))
    texts = [t for group in sh.iter_row_groups(val) for t in group]
    cached = [
        d.tolist()
        for batch, _ in _first(cached_document_batches(sample_data, "val"), -(-len(texts) // 128))
        for d in batch
    ]
    assert cached == [[bos, *enc.encode_ordinary(t)] for t in texts]


def test_cache_rebuilt_when_missing(sample_data: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "d"
    shutil.copytree(sample_data, copy)
    shutil.rmtree(copy / "tokens")
    a = BestFitPacker(cached_document_batches(copy, "val"), 33).next_rows(3)
    b = BestFitPacker(cached_document_batches(sample_data, "val"), 33).next_rows(3)
    assert np.array_equal(a, b)
    assert (copy / "tokens").is_dir()
