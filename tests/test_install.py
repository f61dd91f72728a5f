"""The tested set of versions: constraints.txt, the copy the package ships, and the README's
install commands that use it (docs/install.md)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from stagewise.tested_set import normalize, parse_pins, shipped_constraints

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _declared() -> dict[str, list[str]]:
    """Every requirement name of pyproject.toml: the base install and each extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"base": project["dependencies"], **project["optional-dependencies"]}
    return {
        group: [m.group(1) for r in reqs if (m := NAME.match(r))] for group, reqs in groups.items()
    }


@pytest.mark.smoke
def test_the_package_ships_the_tested_set_byte_for_byte() -> None:
    # scripts/update-constraints writes both; a hand edit of one of them fails here
    assert shipped_constraints() == (ROOT / "constraints.txt").read_text(encoding="utf-8")


@pytest.mark.smoke
def test_every_declared_dependency_is_pinned_and_torch_is_the_readmes() -> None:
    pins = parse_pins((ROOT / "constraints.txt").read_text(encoding="utf-8"))
    unpinned = [
        f"{name} ({group})"
        for group, names in _declared().items()
        for name in names
        if normalize(name) not in pins
    ]
    assert not unpinned, f"run scripts/update-constraints: not in constraints.txt: {unpinned}"
    # No local label: `torch==2.13.0` matches the CPU build and PyPI's default build alike.
    assert pins["torch"] == "2.13.0"


@pytest.mark.smoke
def test_the_readme_and_ci_install_the_tested_set() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    installs = [line for line in quick.splitlines() if "pip install" in line]
    assert len(installs) == 2
    assert all('-c constraints.txt "torch==2.13.0"' in line for line in installs)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # CI's tested leg is the README's command 2 (quiet, without the pytest cache)
    command2 = (
        installs[1]
        .replace("pip install ", "pip install -q ")
        .replace("pytest -q", "pytest -q -p no:cacheprovider")
    )
    assert command2 in ci
    assert ".venv/bin/deptry src" in ci
    newest = ci.split("Leg 2", 1)[1]
    install = next(line for line in newest.splitlines() if "-newest/bin/pip install" in line)
    assert " -c " not in install and "[" not in install  # no constraints, no extras
    assert "stagewise demo --quick" in newest and "-m smoke" in newest
