"""pyproject.toml says which versions the code is written against, requirements.txt which
ones run: each direct dependency's range is the pinned minor version (patch releases only),
and every library libs/ and services/ import is declared. A range wider than what was
tested is a promise nobody checked (issue 20)."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}


def pinned() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def imported_distributions() -> set[str]:
    """Distributions whose modules libs/ and services/ import."""
    modules = set()
    for package in ("libs", "services"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    modules.add(node.module.split(".")[0])
    owners = packages_distributions()
    return {canonicalize_name(d) for m in modules - set(sys.stdlib_module_names) - {"libs", "services"}
            for d in owners.get(m, [m])}


def test_each_range_is_the_pinned_minor_version():
    pins = pinned()
    wrong = []
    for name, requirement in declared().items():
        pin = pins.get(name)
        if pin is None:
            wrong.append(f"{name}: not pinned in requirements.txt")
            continue
        minor = f"{pin.major}.{pin.minor}"
        expected = {f">={minor}", f"<{pin.major}.{pin.minor + 1}"}
        if {str(s) for s in requirement.specifier} != expected:
            wrong.append(f"{name}: {requirement.specifier} in pyproject.toml, pinned {pin}: write {','.join(sorted(expected))}")
    assert wrong == []


def test_every_library_the_code_imports_is_declared():
    missing = imported_distributions() - set(declared())
    assert missing == set(), f"imported but not in pyproject.toml's dependencies: {sorted(missing)}"
