"""`stagewise data prepare`: bring a corpus into the climbmix layout, train the tokenizer, and
tokenise every shard into the cache the loader reads.

A prepared folder holds:
    shard_XXXXX.parquet        text shards; the last one (by index) is the validation split
    tokenizer/tokenizer.pkl    the tiktoken Encoding (BOS = <|reserved_0|>)
    tokenizer/token_bytes.npy  bytes per token id as autoresearch counts them, 0 for specials
    tokenizer/token_bytes.json which definition wrote the table (an older one is rebuilt on load)
    tokens/                    pre-tokenised shards (so a run starts in well under a second)
    data.json                  what was prepared from what
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from stagewise.data import shards as sh
from stagewise.data.loader import CACHE_DIR, TOKENIZER_DIR, build_token_cache
from stagewise.data.tokenizer import (
    TOKEN_BYTES_DEFINITION,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)
from stagewise.defaults import VOCAB_SIZE
from stagewise.errors import DataError

DEFAULT_VOCAB = VOCAB_SIZE
DEFAULT_CLIMBMIX_SHARDS = 10  # autoresearch's default download: ~10 training shards
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_URL_ENV = "STAGEWISE_CLIMBMIX_URL"  # override, e.g. a mirror or a test server
DOWNLOAD_ATTEMPTS = 5
DOWNLOAD_CHUNK = 1 << 20
TXT_DOCS_PER_SHARD = 4096
TXT_VAL_FRACTION = 0.05  # held-out share of documents when a folder of .txt files is given
MANIFEST = "data.json"


# ---------------------------------------------------------------------------
# Sources -> shards in `out`
# ---------------------------------------------------------------------------


def _clear_shards(out: Path) -> None:
    for old in out.glob("shard_*.parquet"):
        old.unlink()


def _from_sample(out: Path, num_shards: int | None) -> None:
    folder = resources.files("stagewise.data") / "sample"
    names = sorted(p.name for p in folder.iterdir() if sh.SHARD_PATTERN.match(p.name))
    train, val = names[:-1], names[-1]
    if num_shards is not None:
        train = train[: max(1, num_shards)]
    _clear_shards(out)
    for name in [*train, val]:
        (out / name).write_bytes((folder / name).read_bytes())


def _from_folder(src: Path, out: Path, num_shards: int | None) -> None:
    if not src.is_dir():
        raise DataError(f"--source {src}: not 'sample', 'climbmix' or an existing folder")
    if src.resolve() == out.resolve():
        raise DataError(f"--source and --out are the same folder ({src}); choose another --out")
    parquets = sorted(src.glob("*.parquet"))
    texts = sorted(src.glob("*.txt"))
    if parquets:
        for path in parquets:
            sh.check_shard(path)
        if len(parquets) < 2:
            raise DataError(
                f"{src}: found 1 parquet file; need at least 2 (the last is pinned as validation)"
            )
        train, val = parquets[:-1], parquets[-1]
        if num_shards is not None:
            train = train[: max(1, num_shards)]
        _clear_shards(out)
        keep_names = all(sh.SHARD_PATTERN.match(p.name) for p in parquets)
        for i, path in enumerate([*train, val]):
            name = path.name if keep_names else sh.shard_name(i)
            shutil.copyfile(path, out / name)
        return
    if not texts:
        raise DataError(
            f"{src}: no shards: expected *.parquet files (with a 'text' column) or *.txt files"
        )
    docs: list[str] = []
    for path in texts:
        docs.extend(sh.chunk_text(path.read_text(encoding="utf-8", errors="replace")))
    if not docs:
        raise DataError(f"{src}: the corpus is empty (the .txt files hold no text)")
    if len(docs) < 2:
        raise DataError(f"{src}: only 1 document of text; need at least 2 (one for validation)")
    n_val = max(1, int(len(docs) * TXT_VAL_FRACTION))
    train_docs, val_docs = docs[:-n_val], docs[-n_val:]
    chunks = [
        train_docs[i : i + TXT_DOCS_PER_SHARD]
        for i in range(0, len(train_docs), TXT_DOCS_PER_SHARD)
    ]
    if num_shards is not None:
        chunks = chunks[: max(1, num_shards)]
    _clear_shards(out)
    for i, chunk in enumerate(chunks):
        sh.write_shard(out / sh.shard_name(i), chunk)
    sh.write_shard(out / sh.shard_name(len(chunks)), val_docs)


def download_file(
    url: str, dest: Path, attempts: int = DOWNLOAD_ATTEMPTS, backoff: float = 2.0
) -> None:
    """Download `url` to `dest` with retries; a `.partial` file is resumed with an HTTP Range."""
    if dest.exists():
        return
    partial = dest.with_name(dest.name + ".partial")
    last_error: Exception | None = None
    for attempt in range(1, attempts + 1):
        have = partial.stat().st_size if partial.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                # 206: the server honoured the range, so append; 200: it sent everything, restart.
                mode = "ab" if have and response.status == 206 else "wb"
                with partial.open(mode) as f:
                    while chunk := response.read(DOWNLOAD_CHUNK):
                        f.write(chunk)
            sh.check_shard(partial)
            partial.replace(dest)
            return
        except urllib.error.HTTPError as exc:
            exc.close()  # an HTTPError holds the open response
            last_error = exc
            if exc.code == 416:  # range beyond the end: the partial file is bad, start over
                partial.unlink(missing_ok=True)
            elif exc.code == 404:
                break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
        except DataError as exc:  # complete but not a parquet file: corrupt, fetch it again
            last_error = exc
            partial.unlink(missing_ok=True)
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    raise DataError(f"could not download {url} after {attempts} attempts: {last_error}")


def _from_climbmix(out: Path, num_shards: int | None, base_url: str | None, workers: int) -> None:
    url = (base_url or os.environ.get(CLIMBMIX_URL_ENV) or CLIMBMIX_URL).rstrip("/")
    n_train = min(
        num_shards if num_shards is not None else DEFAULT_CLIMBMIX_SHARDS, sh.CLIMBMIX_LAST_SHARD
    )
    ids = [*range(max(1, n_train)), sh.CLIMBMIX_LAST_SHARD]
    wanted = {sh.shard_name(i) for i in ids}
    for stale in out.glob("shard_*.parquet"):  # a previous run with more shards, or a sample
        if stale.name not in wanted:
            stale.unlink()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [
            pool.submit(download_file, f"{url}/{sh.shard_name(i)}", out / sh.shard_name(i))
            for i in ids
        ]
        for future in futures:
            future.result()


# ---------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------


def prepare(
    source: str | Path = "sample",
    out: str | Path = "data",
    vocab_size: int = DEFAULT_VOCAB,
    num_shards: int | None = None,
    *,
    base_url: str | None = None,
    download_workers: int = 4,
) -> dict[str, Any]:
    """Prepare `out` from `source` ('sample', 'climbmix' or a folder); returns the manifest."""
    t0 = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if num_shards is not None and num_shards < 1:
        raise DataError(f"--num-shards must be at least 1, but got {num_shards}")
    src = str(source)
    if src == "sample":
        _from_sample(out, num_shards)
    elif src == "climbmix":
        _from_climbmix(out, num_shards, base_url, download_workers)
    else:
        _from_folder(Path(src), out, num_shards)

    all_shards = sh.list_shards(out)
    train, val = sh.split_shards(all_shards)
    rows = {p.name: sh.check_shard(p) for p in all_shards}
    if rows[val.name] == 0 or not any(t.strip() for t in sh.iter_documents([val])):
        raise DataError(f"{val}: the validation shard holds no text")
    enc = train_tokenizer(sh.iter_documents(train), vocab_size)
    save_tokenizer(enc, out / TOKENIZER_DIR)
    enc = load_tokenizer(out / TOKENIZER_DIR)  # what the loader will see
    shutil.rmtree(out / CACHE_DIR, ignore_errors=True)  # old caches belong to an old tokenizer
    for shard in all_shards:
        build_token_cache(out, shard, enc)
    manifest = {
        "source": src if src in ("sample", "climbmix") else str(Path(src).resolve()),
        "vocab_size": int(enc.n_vocab),
        "token_bytes": TOKEN_BYTES_DEFINITION,
        "train_shards": [p.name for p in train],
        "val_shard": val.name,
        "documents": sum(rows.values()),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(data_dir: Path) -> dict[str, Any]:
    path = data_dir / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{data_dir} is not a prepared data folder (no {MANIFEST}); run `stagewise data prepare --out {data_dir}`"
        )
    result: dict[str, Any] = json.loads(path.read_text())
    return result
