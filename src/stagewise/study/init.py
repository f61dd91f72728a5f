"""The files of a new study folder: a minimal template, or a copy of a shipped example.

Only files here (this is the study layer): `stagewise.create.init_study` also opens the ledger
and records the example's decisions taken outside the tool (`outside_decisions.toml`).
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path

from stagewise.errors import StudyError
from stagewise.paths import ID_MAX_LENGTH, is_safe_id

# --example NAME -> the folder under stagewise/examples that holds it.
EXAMPLE_FOLDERS = {"paper06": "paper06", "own-trainer": "own_trainer"}
EXAMPLES = tuple(EXAMPLE_FOLDERS)
OUTSIDE_DECISIONS = "outside_decisions.toml"

# Sized for the CPU of a laptop or a 2-core VM, measured (docs/benchmarks.md): the first ranked
# result (init, data prepare, run --freeze --through screen) comes in under three minutes there,
# and every screen run trains more optimizer steps than min_steps.
TEMPLATE_STUDY = """\
[study]
name = "{name}"
reference = "ref"
matrix = "matrix.csv"

# Sized for a CPU (2 cores are enough), from throughput measured on one:
# - one forward/backward per optimizer step: total_batch_size in matrix.csv (1024 tokens) is
#   device_batch_size x sequence_len = 8 x 128; a larger total batch is several micro-batches
#   per step, and a short budget then trains only a handful of steps;
# - a tiny model (head_dim 32: 4-6 heads) trains ~2-5 steps a second on one idle core, so the
#   40 s screen trains ~100 steps, and still over min_steps on a machine busy with 7 other jobs
#   (measured: ~0.5 steps a second there);
# - eval_tokens = 4096 (32 validation rows) evaluates in about a second, not longer than the
#   training it scores;
# - two worker slots of one core each: two runs at a time, and a busy machine slows a
#   one-thread run far less than a two-thread one (measured: 3x fewer steps lost).
# On a GPU raise sequence_len, device_batch_size, total_batch_size and eval_tokens together, and
# the budgets (`stagewise doctor` measures this machine's tokens/s).
[runner]
device = "cpu"
head_dim = 32
sequence_len = 128
device_batch_size = 8
eval_tokens = 4096
window_pattern = "SL"
min_steps = 20         # a run that trains fewer optimizer steps is flagged too_short
data = "data"          # prepare it with: stagewise data prepare --out {folder}/data

[hosts.local]
executor = "local"
devices = ["cpu"]
workers = 2

[stages.screen]
budget = "40s"
seeds = [1]
hosts = ["local"]
candidates = "all"

[gates.g_screen]
kind = "promote"
stages = ["screen"]
rules = [
  {{ rule = "best_k", k = 1, reason = "best mean at the screen" }},
  {{ rule = "keep", roles = ["reference"], reason = "predeclared reference" }},
]

[stages.confirm]
budget = "2m"
seeds = [2, 3]
hosts = ["local"]
candidates = {{ gate = "g_screen" }}

[gates.g_confirm]
kind = "confirm"
stages = ["confirm"]
rules = [
  {{ rule = "mean_gap_to_reference", threshold = 0.01, roles = ["variant"], reason = "no worse than the reference by 0.01 bpb" }},
]
"""

TEMPLATE_MATRIX = """\
label,condition_id,role,depth,aspect_ratio,matrix_lr,total_batch_size
ref,ref,reference,2,64,0.04,1024
wide,wide,variant,2,96,0.04,1024
deep,deep,variant,3,64,0.04,1024
"""


def next_steps(folder: Path | str, example: str | None = None) -> tuple[str, ...]:
    """The commands that take a new study to its first result, in order, one per line."""
    f = str(folder)
    if example == "paper06":
        return (
            f"stagewise validate {f}",
            f"stagewise freeze {f} g12h",
            f"stagewise import {f} {f}/results/stage3_12h.csv",
            f"stagewise gate {f} g12h",
            f"stagewise report {f}",
        )
    prepare = (
        f"stagewise data prepare --source sample --out {f}/data"
        if example == "own-trainer"
        else f"stagewise data prepare --out {f}/data"
    )
    through = "" if example == "own-trainer" else " --through screen"
    return (
        prepare,
        f"stagewise validate {f}",
        f"stagewise run {f} --freeze{through}",
        f"stagewise status {f}",
        f"stagewise report {f}",
    )


def study_name(folder: Path) -> str:
    """A safe id made from the folder's name: `My Study (v2)` -> `My-Study-v2`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name, flags=re.ASCII)
    name = re.sub(r"\.{2,}", ".", name).strip("._-")[:ID_MAX_LENGTH].rstrip("._-")
    return name if is_safe_id(name) else "study"


def example_path(name: str) -> Path:
    if name not in EXAMPLE_FOLDERS:
        raise StudyError(f"--example: unknown example {name!r}; available: {', '.join(EXAMPLES)}")
    return Path(str(resources.files("stagewise.examples") / EXAMPLE_FOLDERS[name]))


def write_study_files(folder: Path | str, example: str | None = None) -> Path:
    """Write a new study folder (which must be empty or absent); return its path."""
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise StudyError(f"{target}: already exists and is not empty; choose a new folder")
    if example is not None:
        source = example_path(example)
        shutil.copytree(
            source,
            target,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "__init__.py"),
        )
    else:
        target.mkdir(parents=True, exist_ok=True)
        # The folder's name becomes the study name, so it must follow the id rule; the folder
        # is only a comment, but a newline in it would end the comment.
        folder_text = str(target).replace("\n", " ").replace("\r", " ")
        (target / "study.toml").write_text(
            TEMPLATE_STUDY.format(name=study_name(target), folder=folder_text), encoding="utf-8"
        )
        (target / "matrix.csv").write_text(TEMPLATE_MATRIX, encoding="utf-8")
    return target
