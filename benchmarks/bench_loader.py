"""Dataloader throughput: our best-fit packer vs the straightforward one, same corpus, same run.

The baseline is written the way autoresearch's reference describes the algorithm: documents are
read from the parquet shards and tokenised in batches of 128 while packing, the 1000-document
buffer is a Python list, and every placement scans the whole buffer for the longest document
that fits. Ours reads the pre-tokenised shard cache and keeps the buffer sorted (bisect).
Both must produce identical rows; the script asserts it.

    .venv/bin/python benchmarks/bench_loader.py                  # sample corpus, vocab 8192
    .venv/bin/python benchmarks/bench_loader.py --data DIR --rows 256 --seq-len 2048
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stagewise.data import shards as sh
from stagewise.data.loader import TOKENIZER_DIR, BestFitPacker, cached_document_batches
from stagewise.data.prepare import prepare
from stagewise.data.tokenizer import bos_id, load_tokenizer


def reference_rows(data: Path, row_len: int, n_rows: int, buffer_size: int = 1000) -> np.ndarray:
    enc = load_tokenizer(data / TOKENIZER_DIR)
    bos = bos_id(enc)
    train, _ = sh.split_shards(sh.list_shards(data))

    def batches() -> Iterator[list[str]]:
        while True:
            for shard in train:
                for texts in sh.iter_row_groups(shard):
                    for i in range(0, len(texts), 128):
                        yield texts[i : i + 128]

    source = batches()
    buffer: list[list[int]] = []
    rows = np.empty((n_rows, row_len), dtype=np.int64)
    for r in range(n_rows):
        pos = 0
        while pos < row_len:
            while len(buffer) < buffer_size:
                buffer.extend([bos, *ids] for ids in enc.encode_ordinary_batch(next(source)))
            remaining = row_len - pos
            best, best_len = -1, 0
            for i, doc in enumerate(buffer):
                if best_len < len(doc) <= remaining:
                    best, best_len = i, len(doc)
            if best >= 0:
                doc = buffer.pop(best)
                rows[r, pos : pos + len(doc)] = doc
                pos += len(doc)
            else:
                shortest = min(range(len(buffer)), key=lambda i: len(buffer[i]))
                rows[r, pos:] = buffer.pop(shortest)[:remaining]
                pos = row_len
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a prepared folder (default: prepare the sample)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for each packer")
    args = parser.parse_args()
    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory()
        args.data = Path(tmp.name)
        t0 = time.perf_counter()
        prepare("sample", args.data, vocab_size=args.vocab_size)
        print(
            f"prepared the sample corpus (vocab {args.vocab_size}, incl. the token cache) "
            f"in {time.perf_counter() - t0:.1f}s"
        )
    row_len = args.seq_len + 1
    tokens = args.rows * row_len

    def best_of(fn):  # type: ignore[no-untyped-def]
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_ref, ref = best_of(lambda: reference_rows(args.data, row_len, args.rows))
    t_ours, ours = best_of(
        lambda: BestFitPacker(cached_document_batches(args.data, "train"), row_len).next_rows(
            args.rows
        )
    )
    assert np.array_equal(ref, ours), "packings differ"
    print(f"rows={args.rows} x {row_len} tokens ({tokens:,} tokens), best of {args.repeats}")
    print(f"reference (tokenise + linear scan): {tokens / t_ref:12,.0f} tok/s  ({t_ref:.3f}s)")
    print(f"stagewise (cache + bisect):         {tokens / t_ours:12,.0f} tok/s  ({t_ours:.3f}s)")
    print(f"speed-up: {t_ref / t_ours:.1f}x   identical output: yes")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
