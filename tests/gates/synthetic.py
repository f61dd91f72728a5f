"""A second, independent test study with hand-computed numbers (not the paper's).

Two pooled stages of the same budget (sA seed 1, sB seed 2) on three hosts: six cells.
Cell order: sA/h1, sA/h2, sA/h3, sB/h1, sB/h2, sB/h3.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stagewise.ledger import Ledger

MATRIX = """\
label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size
ref,ref,reference,2,64,0.04,4096
cmp,cmp,comparator,2,64,0.04,4096
v1,v1,variant,4,64,0.04,4096
v2,v2,variant,2,32,0.04,4096
v3,v3,variant,1,64,0.04,4096
"""

STUDY = """\
[study]
name = "synthetic"
reference = "ref"
matrix = "matrix.csv"

[hosts.h1]
executor = "external"
[hosts.h2]
executor = "external"
[hosts.h3]
executor = "external"

[stages.sA]
budget = "10m"
seeds = [1]
hosts = ["h1", "h2", "h3"]
candidates = "all"

[stages.sB]
budget = "10m"
seeds = [2]
hosts = ["h1", "h2", "h3"]
candidates = "all"

[gates.gP]
kind = "promote"
stages = ["sA", "sB"]
rules = [
  { rule = "best_k", k = 1, reason = "best mean" },
  { rule = "within_gap_of_best", threshold = 0.01, reason = "close to the best" },
  { rule = "keep", roles = ["comparator"], reason = "predeclared comparator" },
]

[gates.gC]
kind = "confirm"
stages = ["sA", "sB"]
rules = [
  { rule = "rank_first_in_all_cells", conditions = ["v1"] },
  { rule = "max_gap_to_reference", conditions = ["cmp"], threshold = 0.02 },
  { rule = "mean_gap_to_reference", roles = ["variant"], threshold = 0.02 },
]
"""

CELLS = (
    ("sA", 1, "h1"),
    ("sA", 1, "h2"),
    ("sA", 1, "h3"),
    ("sB", 2, "h1"),
    ("sB", 2, "h2"),
    ("sB", 2, "h3"),
)

VALUES = {
    "ref": (1.00, 1.02, 1.04, 1.01, 1.03, 1.05),
    "cmp": (1.01, 1.02, 1.05, 1.03, 1.02, 1.06),  # ties ref in sA/h2
    "v1": (0.99, 1.03, 1.04, 1.00, 1.04, 1.04),  # ties ref in sA/h3
    "v2": (1.02, 1.05, 1.06, 1.02, 1.05, 1.07),
    "v3": (0.98, 1.00, 1.00, 0.98, 1.00, None),  # incomplete: no result in sB/h3
}


@dataclass(frozen=True)
class Result:
    stage: str
    condition_id: str
    seed: int
    host: str
    val_bpb: float | None
    status: str = "succeeded"
    training_seconds: float | None = 600.0
    total_tokens_M: float | None = 10.0
    num_params_M: float | None = None


def results(values: dict[str, tuple[float | None, ...]] = VALUES) -> list[Result]:
    out = []
    for cid, row in values.items():
        for (stage, seed, host), v in zip(CELLS, row, strict=True):
            if v is not None:
                out.append(Result(stage, cid, seed, host, v))
    return out


def csv_rows() -> str:
    lines = ["stage,condition_id,seed,host,val_bpb,training_seconds,total_tokens_M"]
    for r in results():
        lines.append(f"{r.stage},{r.condition_id},{r.seed},{r.host},{r.val_bpb},600,10")
    return "\n".join(lines) + "\n"


def write(folder: Path, study: str = STUDY) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.toml").write_text(study, encoding="utf-8")
    (folder / "matrix.csv").write_text(MATRIX, encoding="utf-8")
    (folder / "results.csv").write_text(csv_rows(), encoding="utf-8")
    # A study folder holds its ledger from the start (the CLI creates none in an existing one).
    with Ledger.open(folder):
        pass
    return folder
