"""[runner] options, the matrix's runner columns and command templates, checked before any run.

For our own trainer (no command of the study's own) every option must be one `stagewise train`
knows; for any runner, values must be scalars within their bounds and every `{placeholder}` of a
command template must resolve for every condition.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

from stagewise import bounds
from stagewise.defaults import (
    DEVICE_BATCH_SIZE,
    EVAL_TOKENS,
    HEAD_DIM,
    SEQUENCE_LEN,
    VOCAB_SIZE,
)
from stagewise.errors import StudyError
from stagewise.study.matrix import TEXT_PARAMS
from stagewise.study.model import Condition
from stagewise.study.toml_fields import TomlContext, nearest


def check_runner(
    ctx: TomlContext,
    runner: dict[str, Any],
    matrix_path: Path,
    conditions: tuple[Condition, ...],
    *,
    own_runner: bool,
) -> None:
    """Runner options in [runner] and the matrix: known names (for our runner), sane values."""
    known = [*bounds.RUNNER_OPTIONS, *bounds.EXECUTOR_OPTIONS]
    for key, value in runner.items():
        if isinstance(value, dict | list):
            raise ctx.fail(
                f"runner.{key}", f"expected a number, string or boolean, but got {value!r}"
            )
        if own_runner and key not in known:
            raise ctx.fail(
                f"runner.{key}", f"not an option of `stagewise train`; {nearest(key, known)}"
            )
        if key in TEXT_PARAMS and not isinstance(value, str):
            raise ctx.fail(f"runner.{key}", f"expected a string, but got {value!r}")
        problem = bounds.option_problem(key, value)
        if isinstance(value, float) and not math.isfinite(value):
            # A template's own value may be any scalar, but numbers must be finite.
            problem = problem or f"expected a finite number, but got {value!r}"
        if problem is not None:
            raise ctx.fail(f"runner.{key}", problem)
    for cond in conditions:
        where = f"{matrix_path}: condition {cond.condition_id}"
        for key, value in cond.params.items():
            if own_runner and key not in known:
                raise StudyError(
                    f"{where}: column {key!r} is not an option of `stagewise train`; "
                    f"{nearest(key, known)}"
                )
            problem = bounds.option_problem(key, value)
            if problem is not None:
                raise StudyError(f"{where}: {key}: {problem}")
        merged = {**runner, **cond.params}
        if "depth" in merged and "aspect_ratio" in merged:
            problem = bounds.model_size_problem(
                merged["depth"],
                merged["aspect_ratio"],
                merged.get("head_dim", HEAD_DIM),
                merged.get("vocab_size", VOCAB_SIZE),
            )
            if problem is not None:
                raise StudyError(f"{where}: {problem}")
        if own_runner and "eval_batch_size" in merged:
            problem = bounds.eval_batch_problem(
                merged["eval_batch_size"],
                merged.get("eval_tokens", EVAL_TOKENS),
                merged.get("device_batch_size", DEVICE_BATCH_SIZE),
                merged.get("sequence_len", SEQUENCE_LEN),
            )
            if problem is not None:
                value = merged["eval_batch_size"]
                if "eval_batch_size" in cond.params:
                    raise StudyError(f"{where}: eval_batch_size={value} {problem}")
                raise ctx.fail("runner.eval_batch_size", f"{value} {problem}")


# Names every command template may use besides the runner options (executors/command.py's
# `placeholders`; tests/study/test_bounds.py keeps the two in step).
TEMPLATE_NAMES = frozenset(
    {
        "seed",
        "time_budget",
        "budget_seconds",
        "token_budget",
        "step_budget",
        "out",
        "out_dir",
        "summary",
        "condition_id",
        "label",
        "role",
        "stage",
        "host",
        "study",
        "python",
    }
)
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


def check_template(
    ctx: TomlContext,
    key: str,
    template: tuple[str, ...],
    runner: dict[str, Any],
    conditions: tuple[Condition, ...],
) -> None:
    """Every `{name}` resolves for every condition and every brace is balanced, before any run."""
    for element in template:
        for match in _PLACEHOLDER.finditer(element):
            text, name = match.group(0), match.group(1)
            if text in ("{{", "}}"):
                continue
            if name is None:
                raise ctx.fail(
                    key,
                    f"element {element!r}: unbalanced brace; write {{{{ or }}}} for a literal brace",
                )
            if name in TEMPLATE_NAMES or name in runner:
                continue
            lacking = [c.condition_id for c in conditions if name not in c.params]
            if lacking:
                known = sorted(TEMPLATE_NAMES | set(runner))
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {{{close[0]}}}? " if close else ""
                raise ctx.fail(
                    key,
                    f"element {element!r}: unknown placeholder {{{name}}} (no [runner] key or "
                    f"matrix column for {lacking[0]}); {hint}known: {', '.join(known)}",
                )
