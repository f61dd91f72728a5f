"""The resolved recipe of a condition: everything that decides what one of its runs trains.

A freeze (format `stagewise-freeze/2`) stores the recipe of every condition its stages may
train, each run records the sha256 of the recipe it trained, and `stagewise verify` recomputes
every hash from the bundled recipes. A recipe holds

- `matrix`: every matrix column the runner or a template reads (label, role, every parameter);
- `runner`: every `[runner]` setting as the runner receives it (a path as written in
  study.toml, relative to the study, so a study folder that moves keeps its recipes; the
  executor's own keys such as `timeout_seconds` are not runner settings);
- `trainer`: the stagewise version and the sha256 of the runner's source (`runner/` and
  `data/`, the code that trains and measures), and, for a study or host with its own command,
  the argv after substitution (run-level names such as `{seed}` or `{out}` stay as written:
  they differ per run, not per recipe) and the sha256 of every program file it names;
- `metric`: its name and how it is computed;
- `data`: the tokenizer file's sha256, every shard's sha256 and the validation shard, when the
  study trains with stagewise's own runner on a host it drives (for results imported from
  elsewhere, or a trainer of the study's own, the tool reads no data: `data` is null).

The canonical form is sorted-key JSON; the recipe's sha256 is that of its canonical text.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from stagewise.data import shards as sh
from stagewise.data.loader import TOKENIZER_DIR
from stagewise.data.tokenizer import TOKEN_BYTES_DEFINITION, TOKEN_BYTES_VERSION, TOKENIZER_FILE
from stagewise.errors import DataError
from stagewise.executors.command import (
    EXECUTOR_KEYS,
    PATH_KEYS,
    command_template,
    format_value,
    substitute,
)
from stagewise.ledger import canonical_json, sha256_text
from stagewise.study.load import TEMPLATE_NAMES
from stagewise.study.model import Condition, Study

RECIPE_FORMAT = "stagewise-recipe/1"
# Names a command template fills per run (seed, budget, folders, host) or per machine (python,
# the study's absolute path): a recipe keeps them as written. They are every template name but
# the condition's own, which a recipe fills in.
CONDITION_NAMES = frozenset({"condition_id", "label", "role"})
RUN_LEVEL_NAMES = TEMPLATE_NAMES - CONDITION_NAMES
# What val_bpb means when stagewise's own runner computes it (data/metric.py, data/tokenizer.py).
OWN_METRIC = (
    "bits per byte of the validation shard over eval_tokens tokens (stagewise.data.metric: "
    "summed cross-entropy / (ln 2 * bytes of the targets), token bytes {definition} "
    "v{version}, special tokens left out)"
)
COMMAND_METRIC = "as the study's own trainer writes it to summary.json (or its --- block)"
# The source of the code that trains and measures: a change here changes every recipe.
TRAINER_PACKAGES = ("runner", "data")
DATA_PREPARE = "stagewise data prepare --source sample --out {folder}"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stagewise")
    except PackageNotFoundError:  # pragma: no cover - a source checkout without metadata
        return "unknown"


@lru_cache(maxsize=1)
def runner_source_sha256() -> str:
    """sha256 over (path, sha256) of every .py file of the runner's packages, sorted."""
    root = Path(__file__).resolve().parent.parent
    entries = []
    for package in TRAINER_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            entries.append([rel, hashlib.sha256(path.read_bytes()).hexdigest()])
    return sha256_text(canonical_json(entries))


# (path, size, mtime_ns, ctime_ns) -> sha256: a shard is hashed once per process; a file
# replaced or rewritten changes its ctime, which no tool can set back.
_FILE_HASHES: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


@dataclass(frozen=True)
class DataIdentity:
    """The data a run of our runner reads: tokenizer, training shards, validation shard."""

    folder: str  # as written in [runner] data (default "data"), relative to the study
    tokenizer_sha256: str | None
    shards: dict[str, str]  # training shard name -> sha256
    validation_shard: str | None
    validation_sha256: str | None
    problem: str | None = None  # why the folder could not be read (None: it was)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "folder": self.folder,
            "tokenizer": {"file": "tokenizer/tokenizer.pkl", "sha256": self.tokenizer_sha256},
            "shards": dict(self.shards),
            "validation": {"shard": self.validation_shard, "sha256": self.validation_sha256},
        }
        if self.problem is not None:
            out["problem"] = self.problem
        return out

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> DataIdentity:
        return cls(
            folder=str(value.get("folder")),
            tokenizer_sha256=(value.get("tokenizer") or {}).get("sha256"),
            shards={str(k): str(v) for k, v in (value.get("shards") or {}).items()},
            validation_shard=(value.get("validation") or {}).get("shard"),
            validation_sha256=(value.get("validation") or {}).get("sha256"),
            problem=value.get("problem"),
        )


@dataclass(frozen=True)
class TrainerIdentity:
    """What trains: stagewise's runner (version + source hash) and/or the study's commands."""

    stagewise_version: str
    runner_source_sha256: str | None  # None: no host of the study uses stagewise's runner
    commands: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "study" | "hosts.<h>"
    programs: dict[str, str | None] = field(default_factory=dict)  # file named -> sha256

    def to_json(self) -> dict[str, Any]:
        return {
            "stagewise_version": self.stagewise_version,
            "runner_source_sha256": self.runner_source_sha256,
            "commands": {k: list(v) for k, v in self.commands.items()},
            "programs": dict(self.programs),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TrainerIdentity:
        return cls(
            stagewise_version=str(value.get("stagewise_version")),
            runner_source_sha256=value.get("runner_source_sha256"),
            commands={str(k): tuple(map(str, v)) for k, v in value.get("commands", {}).items()},
            programs={str(k): v for k, v in value.get("programs", {}).items()},
        )


@dataclass(frozen=True)
class Recipe:
    """The resolved recipe of one condition (see the module docstring)."""

    condition_id: str
    matrix: dict[str, Any]
    runner: dict[str, Any]
    trainer: TrainerIdentity
    metric: dict[str, str]
    data: DataIdentity | None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECIPE_FORMAT,
            "condition_id": self.condition_id,
            "matrix": dict(self.matrix),
            "runner": dict(self.runner),
            "trainer": self.trainer.to_json(),
            "metric": dict(self.metric),
            "data": self.data.to_json() if self.data is not None else None,
        }

    @property
    def canonical(self) -> str:
        return canonical_json(self.to_json())

    @property
    def sha256(self) -> str:
        return sha256_text(self.canonical)

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Recipe:
        data = value.get("data")
        return cls(
            condition_id=str(value["condition_id"]),
            matrix=dict(value.get("matrix") or {}),
            runner=dict(value.get("runner") or {}),
            trainer=TrainerIdentity.from_json(value.get("trainer") or {}),
            metric={str(k): str(v) for k, v in (value.get("metric") or {}).items()},
            data=DataIdentity.from_json(data) if isinstance(data, Mapping) else None,
        )


def recipe_sha256(value: Mapping[str, Any]) -> str:
    """The sha256 of a recipe as stored (what verify recomputes)."""
    return sha256_text(canonical_json(dict(value)))


# ---------------------------------------------------------------------------------- resolving


def uses_own_runner(study: Study) -> bool:
    """Whether the tool trains with its own runner on some host it drives (it reads data then)."""
    return any(
        host.executor != "external" and command_template(study, host) is None
        for host in study.hosts.values()
    )


OUTSIDE = "<outside the study>"


def portable_path(study: Study, text: str) -> str:
    """A path as a recipe holds it: relative to the study folder, or `<outside the study>/name`
    (what identifies a file there is its sha256, not where this machine keeps it)."""
    path = Path(text)
    if not path.is_absolute():
        return text
    try:
        return path.resolve().relative_to(study.root.resolve()).as_posix()
    except (ValueError, OSError):
        return f"{OUTSIDE}/{path.name}"


def data_folder(study: Study) -> tuple[str, Path]:
    """The data folder as written in [runner] data (default "data") and where it is."""
    written = study.runner.get("data", "data")
    written = written if isinstance(written, str) else str(written)
    return written, (study.root / written)


def data_problem(study: Study) -> str | None:
    """Why the data the study's own runner needs cannot be read (None: it can)."""
    written, folder = data_folder(study)
    make = DATA_PREPARE.format(folder=folder)
    if not folder.is_dir():
        return f"{folder}: the data folder ([runner] data = {written!r}) is missing; make it with `{make}`"
    tokenizer = folder / TOKENIZER_DIR / TOKENIZER_FILE
    if not tokenizer.is_file() or not os.access(tokenizer, os.R_OK):
        return f"{tokenizer}: the tokenizer is missing or unreadable; make it with `{make}`"
    try:
        shards = sh.list_shards(folder)
        sh.split_shards(shards)
    except DataError as exc:
        return f"{exc}; make the data with `{make}`"
    for shard in shards:
        if not os.access(shard, os.R_OK):
            return f"{shard}: the shard is unreadable; make the data again with `{make}`"
    return None


def data_identity(study: Study) -> DataIdentity:
    written, folder = data_folder(study)
    written = portable_path(study, written)
    if data_problem(study) is not None:
        # The recipe says only that; `data_problem` gives the path and the command that fix it.
        return DataIdentity(written, None, {}, None, None, "missing or unreadable")
    try:
        train, val = sh.split_shards(sh.list_shards(folder))
        return DataIdentity(
            folder=written,
            tokenizer_sha256=file_sha256(folder / TOKENIZER_DIR / TOKENIZER_FILE),
            shards={p.name: file_sha256(p) for p in train},
            validation_shard=val.name,
            validation_sha256=file_sha256(val),
        )
    except OSError as exc:
        return DataIdentity(written, None, {}, None, None, f"unreadable ({exc.strerror})")


def _recipe_values(study: Study, condition: Condition) -> dict[str, Any]:
    """[runner] settings < matrix parameters, paths as written (not resolved per machine)."""
    values = {k: v for k, v in study.runner.items() if k not in EXECUTOR_KEYS}
    values.update(condition.params)
    for key in PATH_KEYS:
        if key in values:
            values[key] = portable_path(study, str(values[key]))
    return values


# What a program file looks like in an argv: a script by its suffix, or an executable file.
# A data or output file the command names (`--journal {study}/journal.txt`) is not a program.
PROGRAM_SUFFIXES = frozenset({".py", ".sh", ".bash", ".zsh", ".pl", ".rb", ".js", ".jl", ".r"})


def _is_program(path: Path) -> bool:
    return path.suffix.lower() in PROGRAM_SUFFIXES or os.access(path, os.X_OK)


def _program_files(study: Study, argv: Iterable[str]) -> dict[str, str | None]:
    """Program files an argv names (relative to the study folder, or absolute): sha256 each.

    The interpreter itself (`{python}`) stays a name: it is the machine's, not the recipe's.
    """
    out: dict[str, str | None] = {}
    root = study.root.resolve()
    for element in argv:
        text = element.replace("{study}", str(root))
        if "{" in text or not text or text.startswith("-"):
            continue
        path = Path(text) if Path(text).is_absolute() else root / text
        try:
            if not path.is_file() or not _is_program(path):
                continue
        except OSError:
            continue
        resolved = path.resolve()
        name = portable_path(study, str(resolved))
        try:
            out[name] = file_sha256(resolved)
        except OSError:
            out[name] = None
    return out


def _commands(study: Study, condition: Condition) -> dict[str, tuple[str, ...]]:
    values = {k: format_value(v) for k, v in _recipe_values(study, condition).items()}
    values.update(condition_id=condition.condition_id, label=condition.label, role=condition.role)
    # Run-level names stay as written: `{seed}` in, `{seed}` out.
    values.update({name: "{" + name + "}" for name in RUN_LEVEL_NAMES})
    templates: dict[str, tuple[str, ...]] = {}
    if study.command is not None:
        templates["study"] = study.command
    for name, host in sorted(study.hosts.items()):
        if host.command is not None:
            templates[f"hosts.{name}"] = host.command
    return {owner: tuple(substitute(t, values)) for owner, t in templates.items()}


def _portable_argv(study: Study, argv: Iterable[str]) -> tuple[str, ...]:
    """An argv as a recipe holds it: an absolute path becomes study-relative or
    `<outside the study>/name` (its program's sha256 identifies it), so that where this machine
    keeps a trainer never changes the recipe and no machine path reaches a bundle."""
    return tuple(portable_path(study, element) for element in argv)


class RecipeResolver:
    """Resolves recipes of one study; what every condition shares is computed once."""

    def __init__(self, study: Study) -> None:
        self.study = study
        # As the loader decides it: no study command, and some host without its own.
        self.own_runner = study.command is None and any(
            h.command is None for h in study.hosts.values()
        )
        self._data: DataIdentity | None = data_identity(study) if uses_own_runner(study) else None
        self._version = _version()
        self._source = runner_source_sha256() if self.own_runner else None

    def recipe(self, condition: Condition) -> Recipe:
        study = self.study
        resolved = _commands(study, condition)
        programs: dict[str, str | None] = {}
        for argv in resolved.values():
            programs.update(_program_files(study, argv))
        commands = {owner: _portable_argv(study, argv) for owner, argv in resolved.items()}
        runner = {k: v for k, v in study.runner.items() if k not in EXECUTOR_KEYS}
        for key in PATH_KEYS:
            if key in runner:
                runner[key] = portable_path(study, str(runner[key]))
        matrix: dict[str, Any] = {"label": condition.label, "role": condition.role}
        matrix.update(condition.params)
        metric = {
            "name": study.metric,
            "computed": (
                OWN_METRIC.format(definition=TOKEN_BYTES_DEFINITION, version=TOKEN_BYTES_VERSION)
                if self.own_runner
                else COMMAND_METRIC
            ),
        }
        return Recipe(
            condition_id=condition.condition_id,
            matrix=matrix,
            runner=runner,
            trainer=TrainerIdentity(self._version, self._source, commands, programs),
            metric=metric,
            data=self._data,
        )

    def recipes(self, condition_ids: Iterable[str]) -> dict[str, Recipe]:
        return {cid: self.recipe(self.study.condition(cid)) for cid in condition_ids}


def resolve_recipes(study: Study, condition_ids: Iterable[str] | None = None) -> dict[str, Recipe]:
    """The recipe of each condition (all of the study's when none are named)."""
    ids = study.condition_ids if condition_ids is None else tuple(condition_ids)
    return RecipeResolver(study).recipes(ids)


def recipe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, old value, new value) for every field that differs, in field order."""
    out: list[tuple[str, Any, Any]] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                sub = f"{path}.{key}" if path else str(key)
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), sub)
            return
        if a != b:
            out.append((path, a, b))

    walk(dict(old), dict(new), "")
    return [c for c in out if c[0] not in ("format", "condition_id")]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def show_value(value: Any) -> str:
    """A field value in a one-line message: JSON, or `(absent)`, hashes shortened."""
    if isinstance(value, _Absent):
        return "(absent)"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = [
    "RECIPE_FORMAT",
    "DataIdentity",
    "Recipe",
    "RecipeResolver",
    "TrainerIdentity",
    "data_problem",
    "file_sha256",
    "recipe_changes",
    "recipe_sha256",
    "resolve_recipes",
    "runner_source_sha256",
    "show_value",
    "uses_own_runner",
]
