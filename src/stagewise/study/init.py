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

EXAMPLES = ("paper06",)
OUTSIDE_DECISIONS = "outside_decisions.toml"

TEMPLATE_STUDY = """\
[study]
name = "{name}"
reference = "ref"
matrix = "matrix.csv"

[runner]
device = "cpu"
sequence_len = 256
device_batch_size = 8
eval_tokens = 65536
data = "data"          # prepare it with: stagewise data prepare --out {folder}/data

[hosts.local]
executor = "local"
devices = ["cpu"]
workers = 1

[stages.screen]
budget = "1m"
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
budget = "5m"
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
ref,ref,reference,2,64,0.04,8192
wide,wide,variant,2,96,0.04,8192
deep,deep,variant,3,64,0.04,8192
"""


def study_name(folder: Path) -> str:
    """A safe id made from the folder's name: `My Study (v2)` -> `My-Study-v2`."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.resolve().name, flags=re.ASCII)
    name = re.sub(r"\.{2,}", ".", name).strip("._-")[:ID_MAX_LENGTH].rstrip("._-")
    return name if is_safe_id(name) else "study"


def example_path(name: str) -> Path:
    if name not in EXAMPLES:
        raise StudyError(f"--example: unknown example {name!r}; available: {', '.join(EXAMPLES)}")
    return Path(str(resources.files("stagewise.examples") / name))


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
