"""Parquet shards in the climbmix layout: `shard_00000.parquet` ..., a `text` column, the last
shard pinned as validation.

karpathy/climbmix-400b-shuffle names its shards `shard_00000` .. `shard_06542` and autoresearch
pins the last one (`shard_06542`) as the validation split, so validation never depends on how many
training shards were downloaded. Every source we accept (the embedded sample, the download, a
local folder) is brought into this layout, so the rest of the pipeline knows only one shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from stagewise.errors import DataError

TEXT_COLUMN = "text"
SHARD_PATTERN = re.compile(r"^shard_(\d{5})\.parquet$")
CLIMBMIX_LAST_SHARD = 6542  # the last climbmix shard; autoresearch pins it as validation
# Row groups of this many documents keep shard reads streaming without loading a whole file.
ROW_GROUP_DOCS = 1024


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def list_shards(folder: Path) -> list[Path]:
    """The shards of a prepared folder, in index order; partial downloads are ignored."""
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist; run `stagewise data prepare` first")
    return sorted(p for p in folder.iterdir() if SHARD_PATTERN.match(p.name))


def split_shards(shards: Sequence[Path]) -> tuple[list[Path], Path]:
    """(train shards, validation shard): the last shard by index is validation."""
    if len(shards) < 2:
        folder = shards[0].parent if shards else "the data folder"
        raise DataError(
            f"{folder}: need at least 2 shards (1 train + the last as validation), "
            f"but found {len(shards)}"
        )
    return list(shards[:-1]), shards[-1]


def check_shard(path: Path) -> int:
    """Validate that `path` is a parquet file with a string `text` column; returns its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path} is not a readable parquet file ({exc})") from exc
    schema = meta.schema_arrow
    if TEXT_COLUMN not in schema.names:
        raise DataError(
            f"{path} has no '{TEXT_COLUMN}' column (columns: {', '.join(schema.names) or 'none'})"
        )
    field_type = schema.field(TEXT_COLUMN).type
    if not (pa.types.is_string(field_type) or pa.types.is_large_string(field_type)):
        raise DataError(f"{path}: column '{TEXT_COLUMN}' must hold strings, but has {field_type}")
    return int(meta.metadata.num_rows)


def iter_row_groups(path: Path) -> Iterator[list[str]]:
    """The documents of one shard, one list per parquet row group (null texts become '')."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    for rg in range(pf.num_row_groups):
        texts = pf.read_row_group(rg, columns=[TEXT_COLUMN]).column(TEXT_COLUMN).to_pylist()
        yield [t if t is not None else "" for t in texts]


def iter_documents(paths: Sequence[Path]) -> Iterator[str]:
    for path in paths:
        for group in iter_row_groups(path):
            yield from group


def write_shard(path: Path, texts: Sequence[str]) -> None:
    """Write one shard atomically (zstd: the sample corpus ships inside the wheel)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({TEXT_COLUMN: pa.array(list(texts), type=pa.string())})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=ROW_GROUP_DOCS, compression="zstd")
    tmp.replace(path)


def chunk_text(text: str, target_chars: int = 4000) -> list[str]:
    """Split a long text into documents at paragraph breaks, each about `target_chars` long.

    Plain-text sources (books, a folder of .txt files) have a few huge documents; the packing
    loader and the tokenizer trainer expect web-like documents of a few KB, as in climbmix.
    """
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    docs: list[str] = []
    current: list[str] = []
    size = 0
    for para in paragraphs:
        current.append(para)
        size += len(para) + 2
        if size >= target_chars:
            docs.append("\n\n".join(current))
            current, size = [], 0
    if current:
        docs.append("\n\n".join(current))
    return docs
