"""The tested set of versions: what is installed, beside what CI tested.

`constraints.txt` at the repository root pins every package of the base install and of every
extra at the version CI ran the suite with (`scripts/update-constraints` writes it from
pyproject.toml with pip-tools). The package ships a byte-identical copy as package data
(`stagewise/constraints.txt`, written by the same script; a test keeps the two equal), so an
installed stagewise knows its tested set without the repository. `stagewise doctor` shows the
versions of torch, typer, numpy, pandas and of each installed extra's packages against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata, resources

CORE = ("torch", "typer", "numpy", "pandas")  # what a first run depends on most
DEV_EXTRAS = frozenset({"test"})  # tools that run the suite, not features
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (Foo_Bar.baz -> foo-bar-baz)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    """The version without its local label: 2.13.0+cpu is the tested 2.13.0."""
    return version.split("+", 1)[0]


def shipped_constraints() -> str:
    """The text of the constraints file shipped inside the package."""
    return (resources.files("stagewise") / "constraints.txt").read_text(encoding="utf-8")


def shipped_constraints_path() -> str:
    return str(resources.files("stagewise") / "constraints.txt")


def parse_pins(text: str) -> dict[str, str]:
    """`name==version` lines of a constraints file, by normalized name."""
    pins = {}
    for line in text.splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def extras() -> dict[str, list[str]]:
    """Each feature extra of the installed stagewise and the packages it adds (empty when
    stagewise runs from a source tree without installed metadata)."""
    try:
        requires = metadata.requires("stagewise") or []
    except metadata.PackageNotFoundError:
        return {}
    out: dict[str, list[str]] = {}
    for requirement in requires:
        extra, name = _EXTRA.search(requirement), _NAME.match(requirement)
        if extra is None or name is None or extra.group(1) in DEV_EXTRAS:
            continue
        out.setdefault(extra.group(1), []).append(name.group(1))
    return out


@dataclass(frozen=True)
class PackageVersion:
    package: str
    installed: str | None
    tested: str | None
    extra: str | None = None  # the extra that brings it; None for the base install

    @property
    def as_tested(self) -> bool:
        """Installed at the tested version (a missing optional package is not a deviation)."""
        if self.installed is None:
            return True
        return self.tested is not None and public(self.installed) == public(self.tested)

    def text(self) -> str:
        if self.installed is None:
            return f"{self.package} not installed"
        if self.as_tested:
            return f"{self.package} {self.installed}"
        tested = "not in the tested set" if self.tested is None else f"tested {self.tested}"
        return f"{self.package} {self.installed} ({tested})"


def versions(pins: dict[str, str] | None = None) -> list[PackageVersion]:
    """The core packages, then the packages of every installed extra, against the pins."""
    pins = parse_pins(shipped_constraints()) if pins is None else pins
    rows = [PackageVersion(name, installed(name), pins.get(normalize(name))) for name in CORE]
    for extra, packages in sorted(extras().items()):
        found = [(name, installed(name)) for name in packages]
        if any(version is None for _, version in found):
            continue  # the extra is not installed
        rows += [
            PackageVersion(name, version, pins.get(normalize(name)), extra)
            for name, version in found
        ]
    return rows


__all__ = [
    "CORE",
    "PackageVersion",
    "extras",
    "parse_pins",
    "shipped_constraints",
    "shipped_constraints_path",
    "versions",
]
