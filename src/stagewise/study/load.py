"""Load and validate a study folder (`study.toml` + the matrix it names).

Every check happens at this boundary, so that later layers work on trusted plain data. Messages
name the file, the key and what would have been valid. This module reads the file, checks the
[study] table and the matrix path, and calls one parser per section:

    toml_fields.py   the file-naming context, typo hints, string/list/argv checks (shared)
    load_runner.py   [runner] options, matrix columns, command templates (`TEMPLATE_NAMES`)
    load_hosts.py    [hosts.<name>]
    load_stages.py   [stages.<id>]: budget, seeds, hosts, candidates
    load_gates.py    [gates.<id>]: kind, pooled stages, rules; the order gates feed stages in
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from stagewise.bounds import parse_problem, read_input_text
from stagewise.errors import StudyError
from stagewise.paths import case_collision, safe_join
from stagewise.study.load_gates import check_order, parse_gate
from stagewise.study.load_hosts import parse_host
from stagewise.study.load_runner import TEMPLATE_NAMES, check_runner, check_template
from stagewise.study.load_stages import parse_stage
from stagewise.study.matrix import load_matrix
from stagewise.study.model import Study
from stagewise.study.toml_fields import TomlContext, argv_list, non_empty_str

# TEMPLATE_NAMES lives in load_runner.py; it is re-exported here, where its users import it.
__all__ = ["STUDY_FILE", "TEMPLATE_NAMES", "load_study"]

STUDY_FILE = "study.toml"
METRICS = ("val_bpb",)
# Keys the file and its [study] table may hold; any other is a typo, refused with the nearest.
TOP_KEYS = ("study", "runner", "hosts", "stages", "gates")
STUDY_KEYS = ("name", "matrix", "metric", "reference", "description")


def _table(
    ctx: TomlContext, data: dict[str, Any], key: str, required: bool = False
) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise ctx.fail(f"[{key}]", "missing table")
        return {}
    if not isinstance(value, dict):
        raise ctx.fail(key, f"expected a table, but got {type(value).__name__}")
    return value


def load_study(folder: Path | str) -> Study:
    """Read `folder/study.toml` and its matrix; raise StudyError on the first problem found."""
    root = Path(folder)
    path = root / STUDY_FILE
    if not root.is_dir():
        raise StudyError(f"{root}: not a study folder (directory not found)")
    if not path.is_file():
        raise StudyError(f"{path}: not found; create a study with `stagewise init {root}`")
    text = read_input_text(path, StudyError)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: invalid TOML: {exc}") from None
    except (RecursionError, ValueError) as exc:
        raise StudyError(f"{path}: invalid TOML: {parse_problem(exc) or exc}") from None
    ctx = TomlContext(path)
    return _build(root.resolve(), ctx, raw)


def _build(root: Path, ctx: TomlContext, raw: dict[str, Any]) -> Study:
    ctx.known_keys("", raw, TOP_KEYS)
    study = _table(ctx, raw, "study", required=True)
    ctx.known_keys("study.", study, STUDY_KEYS)
    # The id rule sees the name as written: a name with surrounding spaces is refused like any
    # other unsafe id (as [stages.<id>], [gates.<id>], [hosts.<id>] are), never silently trimmed.
    non_empty_str(ctx, "study.name", study.get("name"))
    name = ctx.safe_id("study.name", study["name"])
    matrix_file = non_empty_str(ctx, "study.matrix", study.get("matrix"))
    metric = non_empty_str(ctx, "study.metric", study.get("metric", "val_bpb"))
    if metric not in METRICS:
        raise ctx.fail("study.metric", f"expected one of {', '.join(METRICS)}, but got {metric!r}")
    matrix_path = _matrix_path(ctx, root, matrix_file)
    conditions = load_matrix(matrix_path)
    ids = {c.condition_id for c in conditions}
    reference = non_empty_str(ctx, "study.reference", study.get("reference"))
    if reference not in ids:
        raise ctx.fail("study.reference", f"{reference!r} is not a condition_id of {matrix_file}")

    runner = dict(_table(ctx, raw, "runner"))
    command: tuple[str, ...] | None = None
    if "command" in runner:
        command = argv_list(ctx, "runner.command", runner.pop("command"))

    hosts_raw = _table(ctx, raw, "hosts", required=True)
    hosts = {ctx.safe_id(f"hosts.{n}", n): parse_host(ctx, n, t) for n, t in hosts_raw.items()}
    own_runner = command is None and any(h.command is None for h in hosts.values())
    check_runner(ctx, runner, matrix_path, conditions, own_runner=own_runner)
    for template_key, template in [("runner.command", command)] + [
        (f"hosts.{h.name}.command", h.command) for h in hosts.values()
    ]:
        if template is not None:
            check_template(ctx, template_key, template, runner, conditions)
    if not hosts:
        raise ctx.fail("[hosts]", "declare at least one host block, e.g. [hosts.local]")

    stages_raw = _table(ctx, raw, "stages", required=True)
    if not stages_raw:
        raise ctx.fail("[stages]", "declare at least one stage, e.g. [stages.s1]")
    gates_raw = _table(ctx, raw, "gates")
    for sid in stages_raw:
        ctx.safe_id(f"stages.{sid}", sid)
    for gid in gates_raw:
        ctx.safe_id(f"gates.{gid}", gid)
    for table, names in (("hosts", hosts), ("stages", stages_raw), ("gates", gates_raw)):
        clash = case_collision(names)
        if clash is not None:
            raise ctx.fail(
                f"[{table}.{clash[1]}]",
                f"differs from [{table}.{clash[0]}] only in case; they name the same file on a "
                "case-insensitive file system: rename one",
            )
    stages = {sid: parse_stage(ctx, sid, t, hosts, ids, gates_raw) for sid, t in stages_raw.items()}
    gates = {gid: parse_gate(ctx, gid, t, stages, ids, conditions) for gid, t in gates_raw.items()}
    check_order(ctx, stages, gates)
    return Study(
        root=root,
        name=name,
        reference=reference,
        metric=metric,
        matrix_file=matrix_file,
        conditions=conditions,
        hosts=hosts,
        stages=stages,
        gates=gates,
        runner=runner,
        command=command,
        raw=raw,
    )


def _matrix_path(ctx: TomlContext, root: Path, matrix_file: str) -> Path:
    """The matrix lies inside the study folder: the bundle copies it to the same relative path."""
    try:
        return safe_join(root, matrix_file)
    except StudyError:
        raise ctx.fail(
            "study.matrix", f"expected a file inside the study folder, but got {matrix_file!r}"
        ) from None
