"""Safe ids and paths: the one rule for every id that can become part of a file name.

Study, stage, gate, condition and host ids end up in paths (frozen records, decisions, run
folders, report and bundle files). The rule is checked where study files and imports are read;
`safe_join` checks again, right before a path is used, that it lies inside its root
(defence in depth: a check missed upstream is an error here, never a write elsewhere).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from stagewise.errors import StudyError

ID_MAX_LENGTH = 64
# ASCII letters and digits first, then also `.`, `_` and `-`: no separators, no spaces, no NUL,
# no look-alike unicode, nothing a shell or a file system treats specially.
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_ID = re.compile(ID_PATTERN, re.ASCII)
ID_RULE = (
    f"1 to {ID_MAX_LENGTH} ASCII characters: a letter or digit, then letters, digits, '.', '_' "
    "or '-', without '..'"
)


def id_problem(value: object) -> str | None:
    """Why `value` is not a safe id, or None when it is one."""
    if not isinstance(value, str):
        return f"expected a string id, but got {type(value).__name__} {value!r}"
    if not value:
        return "expected an id, but got an empty string"
    if len(value) > ID_MAX_LENGTH:
        return (
            f"ids are at most {ID_MAX_LENGTH} characters, but got {len(value)}: {value[:40]!r}..."
        )
    if _ID.fullmatch(value) is None or ".." in value:
        return f"expected {ID_RULE}, but got {value!r}"
    return None


def case_collision(ids: Iterable[str]) -> tuple[str, str] | None:
    """Two ids that differ only in case (`ref`/`Ref`): the same file on a case-insensitive
    file system (macOS, Windows), so one would overwrite the other's records."""
    seen: dict[str, str] = {}
    for value in ids:
        folded = value.casefold()
        if folded in seen and seen[folded] != value:
            return seen[folded], value
        seen.setdefault(folded, value)
    return None


def visible(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`): a free-text label
    must not drive a terminal (ESC, OSC sequences) nor make an SVG figure invalid XML."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def is_safe_id(value: object) -> bool:
    return id_problem(value) is None


def check_id(where: str, value: object) -> str:
    """`value` if it is a safe id; otherwise StudyError naming `where` (file and key)."""
    problem = id_problem(value)
    if problem is not None:
        raise StudyError(f"{where}: {problem}")
    assert isinstance(value, str)
    return value


def safe_join(root: Path | str, *parts: str) -> Path:
    """`root / parts...`, refused unless it resolves inside `root` (symlinks followed)."""
    base = Path(root).resolve()
    for part in parts:
        if not isinstance(part, str) or not part or "\x00" in part:
            raise StudyError(f"refusing to build a path under {base} from {part!r}")
        # Each part is one name or a relative path of names; absolute parts would replace root.
        if os.path.isabs(part) or Path(part).is_absolute() or part.startswith(("/", "\\")):
            raise StudyError(f"refusing to build a path under {base} from {part!r}")
    target = base.joinpath(*parts).resolve()
    if target != base and base not in target.parents:
        shown = "/".join(parts)
        raise StudyError(f"refusing to write outside {base}: {shown!r} leads to {target}")
    return target


def out_folder_problem(path: Path | str) -> str | None:
    """Why `path` cannot be an output folder (it, or a parent, is a file), or None."""
    here = Path(path)
    for candidate in (here, *here.parents):
        if candidate.exists():
            if not candidate.is_dir():
                return (
                    f"{here}: {'is' if candidate == here else f'{candidate} is'} a file, "
                    "not a folder; choose a folder"
                )
            return None
    return None


__all__ = [
    "ID_MAX_LENGTH",
    "ID_PATTERN",
    "ID_RULE",
    "case_collision",
    "check_id",
    "id_problem",
    "is_safe_id",
    "out_folder_problem",
    "safe_join",
    "visible",
]


# The run-folder layout, one place for the executors that write it and the readers (report,
# export) that find a run's log and outputs in it.
RUNS_DIR = "runs"
RUN_OUT = "out"  # the runner's --out: summary.json, loss log, checkpoint


def run_dir(study_root: Path, stage: str, condition_id: str, seed: int, host: str) -> Path:
    """`<study>/runs/<stage>/<condition>/seed<seed>-<host>/`: train.log and out/ live here."""
    # `runs/` itself must lie inside the study (a link out of it is refused), and the run's
    # folder inside `runs/`.
    runs = safe_join(Path(study_root), RUNS_DIR)
    return safe_join(runs, stage, condition_id, f"seed{seed}-{host}")


def run_out_dir(study_root: Path, stage: str, condition_id: str, seed: int, host: str) -> Path:
    """The runner's output folder of one run: `<run_dir>/out`."""
    return run_dir(study_root, stage, condition_id, seed, host) / RUN_OUT
