"""A two-host test study for verdict confidence and seed planning, with val_bpb written by hand.

Three conditions (ref, a, b) on hosts h0 and h1, one seed per stage. Gates: `gp` promotes from
s1 (best_k between a and b) and feeds s2, judged by `g2` (a mean-gap and a max-gap threshold);
`gmax` is a max-gap confirm gate on s1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stagewise.analysis.cells import StageCells, pool_cells
from stagewise.gates.evaluate import Evaluation, evaluate_pool
from stagewise.study import load_study
from stagewise.study.model import Study

MATRIX = """\
label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size
ref,ref,reference,2,64,0.04,4096
a,a,variant,2,48,0.04,4096
b,b,variant,2,32,0.04,4096
"""

STUDY = """\
[study]
name = "conf"
reference = "ref"
matrix = "matrix.csv"

[hosts.h0]
executor = "external"
[hosts.h1]
executor = "external"

[stages.s1]
budget = "10m"
seeds = [1]
hosts = ["h0", "h1"]
candidates = "all"

[stages.s2]
budget = "1h"
seeds = [2]
hosts = ["h0", "h1"]
candidates = { gate = "gp" }

[gates.gp]
kind = "promote"
stages = ["s1"]
rules = [{ rule = "best_k", k = 1, conditions = ["a", "b"] }, { rule = "keep", roles = ["reference"] }]

[gates.gmax]
kind = "confirm"
stages = ["s1"]
rules = [{ rule = "max_gap_to_reference", threshold = 0.01, conditions = ["a"] }]

[gates.g2]
kind = "confirm"
stages = ["s2"]
rules = [
  { rule = "mean_gap_to_reference", threshold = 0.02, conditions = ["a"] },
  { rule = "max_gap_to_reference", threshold = 0.01, conditions = ["b"] },
]
"""


@dataclass(frozen=True)
class Rec:
    stage: str
    condition_id: str
    seed: int
    host: str
    val_bpb: float | None
    status: str = "succeeded"
    training_seconds: float | None = 60.0
    total_tokens_M: float | None = 1.0
    num_params_M: float | None = 1.0


def write_study(folder: Path) -> Study:
    (folder / "study.toml").write_text(STUDY, encoding="utf-8")
    (folder / "matrix.csv").write_text(MATRIX, encoding="utf-8")
    return load_study(folder)


def evaluate_values(study: Study, gate_id: str, values: dict[tuple[str, str], float]) -> Evaluation:
    """values: (condition, host) -> val_bpb for stage s1, seed 1."""
    runs = [Rec("s1", cid, 1, host, v) for (cid, host), v in values.items()]
    gate = study.gates[gate_id]
    stages = [StageCells("s1", (1,), ("h0", "h1"), None)]
    pool = pool_cells(stages, runs, study.condition_ids)
    return evaluate_pool(study, gate, pool, with_stability=False)
