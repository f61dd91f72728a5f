"""The package's layers, enforced: no module imports a layer above its own.

Every `import` and `from ... import` in every module under src/stagewise is read with `ast`,
wherever it stands: at the top, inside a function (a lazy import is still a dependency) or
under `if TYPE_CHECKING:`. Each module is mapped to a layer by the longest matching prefix in
LAYERS; an import of a higher layer fails the test, naming the importing module, the line and
both layers. A module that matches no entry fails too, with where to add it.

The order (docs/architecture.md explains it):

    leaf -> study -> plan -> ledger -> data/runner -> executors -> analysis -> gates
         -> snapshot -> backtest/driver/status -> report -> audit -> export/demo/doctor/create -> cli/api
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stagewise

PACKAGE = Path(stagewise.__file__).resolve().parent

# Lowest first. A module may import its own layer and any layer before it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaf",
        (
            "stagewise.errors",
            "stagewise.budget_units",
            "stagewise.defaults",  # the runner's fixed constants and the model_dim formula
            "stagewise.protocol",  # the runner <-> executor protocol
            "stagewise.result",  # the dependency-free helper for a user's own trainer
            "stagewise.paths",  # safe ids and paths, the run-folder layout
            "stagewise.model_size",  # the runner's parameter count from shapes (gates cost by it)
            "stagewise.bounds",  # numeric bounds
            "stagewise.html_parts",  # escaping, a table, an inline PNG: the report and back-test
            "stagewise.words",  # counts and small figures as a person reads them
            "stagewise.examples",  # shipped example data (no code above this layer)
            "stagewise.tested_set",  # the tested versions (constraints.txt, package data)
            "stagewise.json_types",  # the types of what is written as JSON
        ),
    ),
    ("study", ("stagewise.study",)),
    ("plan", ("stagewise.plan",)),
    ("ledger", ("stagewise.ledger",)),
    ("data/runner", ("stagewise.data", "stagewise.runner")),
    ("executors", ("stagewise.executors",)),
    ("analysis", ("stagewise.analysis",)),  # incl. stagewise.analysis.confidence
    ("gates", ("stagewise.gates",)),
    # One typed record of (study, ledger), read once: every reader above takes it.
    ("snapshot", ("stagewise.snapshot",)),
    (
        "backtest/driver",
        (
            "stagewise.backtest",
            "stagewise.walk",
            # Where a study stands (plan + ledger only): below the report, which shows it.
            "stagewise.status",
            "stagewise.job_status",  # the cluster jobs part of `status`
        ),
    ),
    ("report", ("stagewise.report",)),
    # What a reviewer with only the bundle checks: verify re-renders with the report's code.
    ("audit", ("stagewise.audit",)),
    (
        "export/demo/doctor",
        (
            "stagewise.export",
            "stagewise.demo",
            "stagewise.doctor",
            "stagewise.doctor_slurm",  # `doctor --host`: a smoke job on a Slurm host block
            "stagewise.create",
        ),
    ),
    # The CLI, and the package namespace that re-exports the public API.
    ("cli", ("stagewise.cli", "stagewise.__main__", "stagewise.__init__")),
)

# Upward imports still to be removed, each with who removes it. Remove an entry when its
# import is gone (test_allow_list_is_current fails on a stale entry).
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer index)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1 and parts[:-1] != [root.name]:
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    rel = Path(*dotted.split(".")[1:])
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported stagewise module) for every import in the file, lazy ones included."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == root.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != root.name:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                # `from stagewise.gates import rules` imports the module stagewise.gates.rules.
                out.append((node.lineno, sub if _is_module(root, sub) else target))
    return sorted(set(out))


def check(root: Path) -> tuple[list[str], list[str], set[tuple[str, str]]]:
    """(upward imports, unmapped modules, allow-listed imports seen) of the package at root."""
    upward: list[str] = []
    unmapped: list[str] = []
    allowed_seen: set[tuple[str, str]] = set()
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        own = layer_of(name)
        if own is None:
            unmapped.append(name)
            continue
        for line, target in imports_of(path, root):
            if target == root.name:
                target = f"{root.name}.__init__"
            theirs = layer_of(target)
            if theirs is None:
                unmapped.append(f"{target} (imported by {name})")
                continue
            if theirs <= own:
                continue
            if (name, target) in ALLOWED:
                allowed_seen.add((name, target))
                continue
            rel = path.relative_to(root.parent)
            upward.append(
                f"{name} ({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]}) at {rel}:{line}"
            )
    return upward, unmapped, allowed_seen


def import_cycles(root: Path) -> list[list[str]]:
    """Every group of modules that import each other, directly or around a loop (lazy imports
    count: they only defer the tie), each sorted, as strongly connected components."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        targets = graph.setdefault(name, set())
        for _, target in imports_of(path, root):
            target = f"{root.name}.__init__" if target == root.name else target
            if target != name:
                targets.add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def test_no_import_cycle() -> None:
    cycles = import_cycles(PACKAGE)
    assert not cycles, "modules that import each other (break the loop):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_check_finds_a_lazy_loop(tmp_path: Path) -> None:
    root = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "gates/__init__.py": "",
            "gates/registry.py": "def f():\n    from stagewise.gates import rules\n",
            "gates/rules.py": "from stagewise.gates.registry import f\n",
            "gates/decide.py": "from stagewise.gates import rules\n",
        },
    )
    assert import_cycles(root) == [["stagewise.gates.registry", "stagewise.gates.rules"]]


def test_no_module_imports_a_layer_above_it() -> None:
    upward, _, _ = check(PACKAGE)
    assert not upward, "upward imports (see tests/test_layers.py):\n" + "\n".join(upward)


def test_every_module_has_a_layer() -> None:
    _, unmapped, _ = check(PACKAGE)
    assert not unmapped, (
        "modules with no layer: add each to LAYERS in tests/test_layers.py (and to "
        "docs/architecture.md) at the layer it belongs to:\n" + "\n".join(sorted(set(unmapped)))
    )


def test_allow_list_is_current() -> None:
    _, _, seen = check(PACKAGE)
    stale = sorted(set(ALLOWED) - seen)
    assert not stale, f"these allowed upward imports are gone; remove them from ALLOWED: {stale}"


def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "stagewise"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_check_finds_lazy_relative_and_from_package_imports(tmp_path: Path) -> None:
    root = _fake_package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "plan.py": "def f():\n    from stagewise.report import html\n",
            "study/__init__.py": "",
            "study/load.py": "from ..gates import rules\nfrom stagewise import errors\n",
            "gates/__init__.py": "",
            "gates/rules.py": "from stagewise.study.load import x\n",
            "report/__init__.py": "",
            "report/html.py": "import stagewise.cli.app\n",
            "cli/__init__.py": "",
            "cli/app.py": "",
            "mystery.py": "",
        },
    )
    upward, unmapped, _ = check(root)
    assert upward == [
        "stagewise.plan (plan) imports stagewise.report.html (report) at stagewise/plan.py:2",
        "stagewise.report.html (report) imports stagewise.cli.app (cli) at "
        "stagewise/report/html.py:1",
        "stagewise.study.load (study) imports stagewise.gates.rules (gates) at "
        "stagewise/study/load.py:1",
    ]
    assert unmapped == ["stagewise.mystery"]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("stagewise.protocol", "leaf"),
        ("stagewise.result", "leaf"),
        ("stagewise.paths", "leaf"),
        ("stagewise.bounds", "leaf"),
        ("stagewise.analysis.confidence", "analysis"),
        ("stagewise.backtest.policies", "backtest/driver"),
        ("stagewise.walk", "backtest/driver"),
        ("stagewise.export.optuna", "export/demo/doctor"),
        ("stagewise.doctor", "export/demo/doctor"),
        ("stagewise.cli.gate_cmds", "cli"),
    ],
)
def test_planned_modules_have_their_layer(module: str, layer: str) -> None:
    index = layer_of(module)
    assert index is not None and LAYERS[index][0] == layer
