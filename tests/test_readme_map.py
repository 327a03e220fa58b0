"""The README's "Where things are" map matches the tree: every path it names exists, and
every package of services/ and libs/ is on it (issue 20: a newcomer finds their room)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def mapped_paths() -> set[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^## Where things are\n+```\n(.*?)^```", text, re.M | re.S)
    assert block, "README.md has no 'Where things are' map"
    paths, parent = set(), ""
    for line in block[1].splitlines():
        if line.startswith("   "):  # a description's second line
            continue
        name = line.split()[0]
        if line.startswith("  "):
            paths.add(parent + name)
        else:
            parent = name
            paths.add(name)
    return {p.rstrip("/") for p in paths}


def test_every_path_on_the_map_exists():
    assert sorted(p for p in mapped_paths() if not (ROOT / p).exists()) == []


def test_every_package_of_services_and_libs_is_on_the_map():
    packages = {f"{top}/{d.name}" for top in ("services", "libs") for d in (ROOT / top).iterdir()
                if (d / "__init__.py").exists()}
    assert sorted(packages - mapped_paths()) == []
