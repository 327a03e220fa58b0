"""The store is the only door to the database (issue 20, item 2): a module under services/
neither imports SQLAlchemy nor reaches past ``libs/store`` to an engine, a connection or a
transaction of its own. Modules that still do are listed below, to be moved behind
libs/store one by one; the list may only shrink: a new module that opens the door itself
fails here, and so does a listed one that no longer needs its entry."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NOT_YET: dict[str, str] = {}
"""Modules still to be moved behind libs/store, and why: none since the worker's write
transaction became ``libs.store.unit_of_work`` and the sweeper went through ``DeliveryLedger``."""


def _reaches_the_database(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "sqlalchemy" for a in node.names):
            found.append(f"line {node.lineno}: imports SQLAlchemy")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "sqlalchemy":
            found.append(f"line {node.lineno}: imports SQLAlchemy")
        elif isinstance(node, ast.ImportFrom) and node.module == "libs.store.session":
            found.append(f"line {node.lineno}: builds an engine")
        elif isinstance(node, ast.Attribute) and node.attr in ("engine", "transaction"):
            found.append(f"line {node.lineno}: uses .{node.attr}")
    return found


def _offenders() -> dict[str, list[str]]:
    out = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        found = _reaches_the_database(ast.parse(path.read_text()))
        if found:
            out[str(path.relative_to(ROOT))] = found
    return out


def test_no_new_module_of_services_reaches_the_database_past_the_store():
    new = {path: found for path, found in _offenders().items() if path not in NOT_YET}
    assert new == {}, "go through libs/store (e.g. libs/store/delivery_status.py) instead"


def test_the_list_of_what_remains_only_shrinks():
    assert sorted(set(NOT_YET) - set(_offenders())) == [], "remove the entries that no longer apply"


def test_the_delivery_commands_go_through_the_store():
    assert "services/cli/deliveries.py" not in _offenders()
