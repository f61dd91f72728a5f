"""`prepare`: the three kinds of source, every kind of bad input, and the resumable download."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stagewise.data import shards as sh
from stagewise.data.prepare import download_file, prepare, read_manifest
from stagewise.errors import DataError

from .conftest import stagewise

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "hex",
    "jolly",
    "dwarves",
]


def _text(i: int, n_words: int = 200) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] + str((i + k) % 13) for k in range(n_words))


def _docs(n: int, start: int = 0) -> list[str]:
    return [_text(start + i) for i in range(n)]


def test_sample_manifest(sample_data: Path) -> None:
    m = read_manifest(sample_data)
    assert m["source"] == "sample" and m["val_shard"] == "shard_00004.parquet"
    assert len(m["train_shards"]) == 4


def test_parquet_folder_renumbered(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, start in (("a.parquet", 0), ("b.parquet", 50), ("c.parquet", 100)):
        sh.write_shard(src / name, _docs(50, start))
    m = prepare(src, tmp_path / "out", vocab_size=300)
    assert m["train_shards"] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert m["val_shard"] == "shard_00002.parquet"  # the last file is pinned as validation


def test_txt_folder(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"{i}.txt").write_text("\n\n".join(_docs(30, 30 * i)))
    m = prepare(src, tmp_path / "out", vocab_size=300)
    assert m["val_shard"] == sh.shard_name(len(m["train_shards"]))
    assert (tmp_path / "out" / "tokenizer" / "tokenizer.pkl").is_file()


def test_num_shards_limits_training_shards(tmp_path: Path) -> None:
    m = prepare("sample", tmp_path / "out", vocab_size=300, num_shards=2)
    assert m["train_shards"] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert m["val_shard"] == "shard_00004.parquet"


# --- bad input: each names the problem ---------------------------------------------------


def test_no_shards(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.md").write_text("hi")
    with pytest.raises(DataError, match="no shards"):
        prepare(tmp_path / "src", tmp_path / "out", vocab_size=300)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not 'sample', 'climbmix' or an existing folder"):
        prepare(tmp_path / "nope", tmp_path / "out", vocab_size=300)


def test_no_text_column(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a.parquet", "b.parquet"):
        pq.write_table(pa.table({"content": ["x y z"] * 5}), src / name)
    with pytest.raises(DataError, match=r"a\.parquet has no 'text' column \(columns: content\)"):
        prepare(src, tmp_path / "out", vocab_size=300)


def test_not_parquet(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sh.write_shard(src / "a.parquet", _docs(5))
    (src / "b.parquet").write_text("this is not parquet")
    with pytest.raises(DataError, match=r"b\.parquet is not a readable parquet file"):
        prepare(src, tmp_path / "out", vocab_size=300)


def test_empty_corpus(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sh.write_shard(src / "a.parquet", ["", ""])
    sh.write_shard(src / "b.parquet", ["some validation text"])
    with pytest.raises(DataError, match="empty"):
        prepare(src, tmp_path / "out", vocab_size=300)


def test_empty_txt_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("   \n\n ")
    with pytest.raises(DataError, match="empty"):
        prepare(src, tmp_path / "out", vocab_size=300)


def test_empty_validation_shard(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sh.write_shard(src / "a.parquet", _docs(20))
    sh.write_shard(src / "b.parquet", [""])
    with pytest.raises(DataError, match="validation shard holds no text"):
        prepare(src, tmp_path / "out", vocab_size=300)


def test_too_little_text_for_vocab(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sh.write_shard(src / "a.parquet", ["a tiny corpus"])
    sh.write_shard(src / "b.parquet", ["validation"])
    with pytest.raises(DataError, match="too little text"):
        prepare(src, tmp_path / "out", vocab_size=8192)


def test_single_parquet_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sh.write_shard(src / "only.parquet", _docs(10))
    with pytest.raises(DataError, match="need at least 2"):
        prepare(src, tmp_path / "out", vocab_size=300)


def test_cli_bad_source_one_line(tmp_path: Path) -> None:
    proc = stagewise("data", "prepare", "--source", tmp_path / "missing", "--out", tmp_path / "o")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "existing folder" in proc.stderr


# --- climbmix download against a local server ----------------------------------------------


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves files from `root`, honouring `Range: bytes=N-` (like the Hugging Face CDN)."""

    root: Path
    requests: list[tuple[str, str | None]]
    fail_first: set[str]
    ignore_range = False

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        rng = self.headers.get("Range")
        self.requests.append((name, rng))
        if self.ignore_range:
            rng = None
        if name in self.fail_first:
            self.fail_first.discard(name)
            self.send_error(503)
            return
        path = self.root / name
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, type[RangeHandler]]]:
    root = tmp_path / "remote"
    root.mkdir()
    for i in (0, 1, 2):
        sh.write_shard(root / sh.shard_name(i), _docs(40, 40 * i))
    sh.write_shard(root / sh.shard_name(sh.CLIMBMIX_LAST_SHARD), _docs(10, 500))
    handler = type("H", (RangeHandler,), {"root": root, "requests": [], "fail_first": set()})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/datasets/climbmix", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_climbmix_download_layout(tmp_path: Path, server: tuple[str, type[RangeHandler]]) -> None:
    url, handler = server
    m = prepare("climbmix", tmp_path / "out", vocab_size=300, num_shards=2, base_url=url)
    assert m["train_shards"] == ["shard_00000.parquet", "shard_00001.parquet"]
    assert m["val_shard"] == "shard_06542.parquet"  # pinned, whatever the number of shards
    names = sorted(name for name, _ in handler.requests)
    assert names == ["shard_00000.parquet", "shard_00001.parquet", "shard_06542.parquet"]
    # A second prepare downloads nothing: complete shards are kept.
    handler.requests.clear()
    prepare("climbmix", tmp_path / "out", vocab_size=300, num_shards=2, base_url=url)
    assert handler.requests == []


def test_resume_partial_file(tmp_path: Path, server: tuple[str, type[RangeHandler]]) -> None:
    url, handler = server
    name = sh.shard_name(1)
    full = (handler.root / name).read_bytes()
    dest = tmp_path / name
    dest.with_name(name + ".partial").write_bytes(full[:1000])
    handler.fail_first = {name}  # one transient error first: the retry must resume, not restart
    download_file(f"{url}/{name}", dest, backoff=0.01)
    assert dest.read_bytes() == full
    assert handler.requests == [(name, "bytes=1000-"), (name, "bytes=1000-")]
    assert not dest.with_name(name + ".partial").exists()


def test_server_without_range_support_restarts(
    tmp_path: Path, server: tuple[str, type[RangeHandler]]
) -> None:
    url, handler = server
    handler.ignore_range = True  # answers 200 with the whole file: appending would corrupt it
    name = sh.shard_name(2)
    dest = tmp_path / name
    dest.with_name(name + ".partial").write_bytes(b"stale bytes from an older attempt")
    download_file(f"{url}/{name}", dest, backoff=0.01)
    assert dest.read_bytes() == (handler.root / name).read_bytes()


def test_missing_remote_shard(tmp_path: Path, server: tuple[str, type[RangeHandler]]) -> None:
    url, _ = server
    with pytest.raises(DataError, match="could not download"):
        download_file(f"{url}/{sh.shard_name(99)}", tmp_path / "x.parquet", backoff=0.01)
