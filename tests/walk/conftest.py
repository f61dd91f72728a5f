"""A three-stage, two-gate study run by a trainer that reports through stagewise.result."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from stagewise.ledger import Ledger

TRAINER = Path(__file__).with_name("trainer.py")
COMMAND = [
    "{python}",
    str(TRAINER),
    "--score",
    "{score}",
    "--sleep",
    "{sleep}",
    "--journal",
    "{study}/journal.txt",
]
# c_c is best, then c_b: g1 promotes c_c and c_b, g2 promotes c_c.
SCORES = {"c_a": 2.0, "c_b": 1.9, "c_c": 1.8}


def walk_study(
    folder: Path,
    *,
    sleep: float = 0.2,
    sleeps: dict[str, float] | None = None,
    g2_extra: str = "",
    s1_hosts: tuple[str, ...] = ("block-a", "block-b"),
    external: bool = False,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["label,condition_id,role,score,sleep"]
    for i, (cid, score) in enumerate(SCORES.items()):
        role = "reference" if i == 0 else "variant"
        rows.append(f"{cid[2:]},{cid},{role},{score},{(sleeps or {}).get(cid, sleep)}")
    (folder / "matrix.csv").write_text("\n".join(rows) + "\n")
    ext = '[hosts.remote]\nexecutor = "external"\n' if external else ""
    (folder / "study.toml").write_text(
        f"""[study]
name = "walk"
reference = "c_a"
matrix = "matrix.csv"
[runner]
command = {json.dumps(COMMAND)}
grace_seconds = 30
[hosts.block-a]
executor = "local"
devices = ["cpu"]
workers = 1
[hosts.block-b]
executor = "local"
devices = ["cpu"]
workers = 1
{ext}
[stages.s1]
budget = "1s"
seeds = [1]
hosts = {json.dumps(list(s1_hosts))}
candidates = "all"

[gates.g1]
kind = "promote"
stages = ["s1"]
rules = [{{ rule = "best_k", k = 2 }}]

[stages.s2]
budget = "2s"
seeds = [1]
hosts = ["block-a", "block-b"]
candidates = {{ gate = "g1" }}

[gates.g2]
kind = "promote"
stages = ["s2"]
rules = [{{ rule = "best_k", k = 1 }}]
{g2_extra}

[stages.s3]
budget = "3s"
seeds = [3]
hosts = ["block-a", "block-b"]
candidates = {{ gate = "g2" }}
"""
    )
    # What `stagewise init` leaves beside the study files: an empty ledger.
    Ledger.open(folder).close()
    return folder


def run_rows(folder: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(folder / "ledger.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY stage, condition_id")]
    conn.close()
    return rows


def journal(folder: Path, what: str) -> list[str]:
    path = folder / "journal.txt"
    if not path.exists():
        return []
    return [line.split()[1] for line in path.read_text().splitlines() if line.startswith(what)]
