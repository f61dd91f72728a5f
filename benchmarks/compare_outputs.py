"""The CLI's outputs before and after a change, captured and compared file by file (issue 26).

`capture` drives the real CLI (`python -m stagewise`, with the given source tree first on the
path) over three studies and writes every output, normalised, into one folder:

- paper06: the acceptance check's replay (init --example paper06, freeze g12h, import
  results/stage3_12h.csv), then `gate g12h --json`, the gate's terminal tables, `sensitivity`,
  `budget`, `status` and `plan` (JSON and terminal), `report`, `bundle` and `verify`;
- synthetic: benchmarks/synthetic_study.py (1,000 imported runs, two gates), the same commands;
- demo (with --demo FOLDER): a copy of a finished `stagewise demo --quick` folder (its runs are
  timed, so it is made once and copied for every capture), the same commands on its gates.

What legitimately differs between two captures, and only that, is normalised:
- the temporary folders' absolute paths (`<STUDY>`, `<REPORT>`, `<BUNDLE>`) and the source
  tree's (`<SRC>`: a library warning on stderr names the file that raised it);
- UTC timestamps written by the ledger (`<TS>`), and every 64-hex-digit sha256 (`<H1>`, `<H2>`,
  ... numbered by first appearance in each file, so equal hashes stay equal): event hashes, the
  chain head and the manifests' file hashes cover the timestamps; every hashed file is itself
  compared (PNG figures by their sha256 in `_png_sha256.txt`);
- the ledger file itself is not compared (its rows hold the timestamps; everything in it
  reaches the outputs above).

`compare A B` lists every file that differs, or is in one capture only, and exits 1 if any does.

    python benchmarks/compare_outputs.py capture OUT --src /tmp/base/src [--demo DEMO]
    python benchmarks/compare_outputs.py capture OUT2 --src src [--demo DEMO]
    python benchmarks/compare_outputs.py compare OUT OUT2
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic_study import write_s2, write_study

TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)?")
HEX64 = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")
TEXT_SUFFIXES = {".json", ".csv", ".md", ".html", ".svg", ".txt", ".toml"}


class Capture:
    def __init__(self, src: Path, out: Path) -> None:
        self.src = src.resolve()
        self.out = out
        self.paths: dict[str, str] = {}

    def cli(self, *args: str | Path, ok: tuple[int, ...] = (0,)) -> str:
        env = {
            **os.environ,
            "PYTHONPATH": str(self.src),
            "COLUMNS": "200",
            "NO_COLOR": "1",
            "TERM": "dumb",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "stagewise", *map(str, args)],
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
        if proc.returncode not in ok:
            raise SystemExit(
                f"stagewise {' '.join(map(str, args))}: exit {proc.returncode}\n"
                f"{proc.stdout}\n{proc.stderr}"
            )
        return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}--- stderr\n{proc.stderr}"

    def normalise(self, text: str) -> str:
        for path, name in sorted(self.paths.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(path, name)
        text = TS.sub("<TS>", text)
        seen: dict[str, str] = {}

        def number(m: re.Match[str]) -> str:
            return seen.setdefault(m.group(0), f"<H{len(seen) + 1}>")

        return HEX64.sub(number, text)

    def save(self, rel: str, text: str) -> None:
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.normalise(text), encoding="utf-8")

    def tree(self, rel: str, folder: Path, skip: tuple[str, ...] = ()) -> None:
        pngs = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            if name.startswith(skip):
                continue
            if path.suffix in TEXT_SUFFIXES:
                self.save(f"{rel}/{name}", path.read_text(encoding="utf-8"))
            else:
                pngs.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
        self.out.joinpath(rel).mkdir(parents=True, exist_ok=True)
        # Not normalised: a figure's bytes must be the same.
        (self.out / rel / "_png_sha256.txt").write_text("".join(pngs), encoding="utf-8")

    def study_outputs(self, name: str, root: Path, gates: list[str], work: Path) -> None:
        self.paths = {
            str(self.src): "<SRC>",  # a warning names the source file that raised it
            str(root.resolve()): "<STUDY>",
            str(root): "<STUDY>",
            str(work / "report"): "<REPORT>",
            str(work / "bundle"): "<BUNDLE>",
        }
        for gate in gates:
            self.save(f"{name}/gate-{gate}.json", self.cli("gate", root, gate, "--json"))
            self.save(f"{name}/gate-{gate}.txt", self.cli("gate", root, gate))
            self.save(
                f"{name}/sensitivity-{gate}.json", self.cli("sensitivity", root, gate, "--json")
            )
            self.save(f"{name}/sensitivity-{gate}.txt", self.cli("sensitivity", root, gate))
        for cmd in ("budget", "status", "plan"):
            self.save(f"{name}/{cmd}.json", self.cli(cmd, root, "--json"))
            self.save(f"{name}/{cmd}.txt", self.cli(cmd, root))
        self.save(f"{name}/report.txt", self.cli("report", root, "--out", work / "report"))
        self.tree(f"{name}/report", work / "report")
        self.save(f"{name}/bundle.txt", self.cli("bundle", root, "--out", work / "bundle"))
        self.tree(f"{name}/bundle", work / "bundle")
        self.save(f"{name}/verify.txt", self.cli("verify", work / "bundle", ok=(0, 1)))
        if (root / "decisions").is_dir():
            self.tree(f"{name}/decisions", root / "decisions")


def capture(src: Path, out: Path, demo: Path | None) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    cap = Capture(src, out)
    with tempfile.TemporaryDirectory(prefix="sw-compare-") as tmp:
        work = Path(tmp)
        p06 = work / "paper06" / "p"
        cap.cli("init", p06, "--example", "paper06")
        cap.cli("freeze", p06, "g12h")
        cap.cli("import", p06, p06 / "results" / "stage3_12h.csv")
        cap.study_outputs("paper06", p06, ["g12h"], work / "paper06")

        syn = write_study(work / "synthetic" / "s")
        cap.cli("freeze", syn, "g1")
        cap.cli("import", syn, syn / "s1.csv")
        cap.cli("gate", syn, "g1")
        obj = json.loads(
            cap.cli("gate", syn, "g1", "--json")
            .split("--- stdout\n", 1)[1]
            .split("--- stderr\n", 1)[0]
        )
        cap.cli("freeze", syn, "g2")
        cap.cli("import", syn, write_s2(syn, list(obj["promoted"])))
        cap.study_outputs("synthetic", syn, ["g1", "g2"], work / "synthetic")

        if demo is not None:
            copy = work / "demo" / "d"
            shutil.copytree(demo, copy, ignore=shutil.ignore_patterns("report", "bundle"))
            import tomllib

            gates = list(tomllib.loads((copy / "study.toml").read_text())["gates"])
            cap.study_outputs("demo", copy, gates, work / "demo")


def compare(a: Path, b: Path) -> int:
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    problems = 0
    for rel in sorted(files_a ^ files_b):
        print(f"only in {'the first' if rel in files_a else 'the second'}: {rel}")
        problems += 1
    for rel in sorted(files_a & files_b):
        ta = (a / rel).read_text(encoding="utf-8")
        tb = (b / rel).read_text(encoding="utf-8")
        if ta != tb:
            problems += 1
            print(f"differs: {rel}")
            diff = difflib.unified_diff(ta.splitlines(), tb.splitlines(), lineterm="", n=1)
            print("\n".join(list(diff)[:40]))
    print(f"{len(files_a & files_b)} files compared, {problems} differ or are unmatched")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("out", type=Path)
    cap.add_argument("--src", type=Path, required=True, help="the source tree to run (.../src)")
    cap.add_argument("--demo", type=Path, help="a finished `stagewise demo --quick` folder")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("a", type=Path)
    cmp_.add_argument("b", type=Path)
    args = parser.parse_args()
    if args.cmd == "capture":
        capture(args.src, args.out, args.demo)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    raise SystemExit(main())
