"""The import graph of scimbus's own packages, read from the source (nothing is imported).

An edge A → B means module A imports module B: ``import B``, ``from B import x`` or
``from package import B`` (B a module of ``package``). ``lazy`` adds the imports made
inside functions, which run later than import time (the CLI imports each command's
dependencies lazily, so a command starts quickly).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _targets(node: ast.AST, here: str, is_package: bool) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom):
        if node.level:  # relative: resolve against this module's package
            package = here.split(".") if is_package else here.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = {f"{base}.{a.name}" for a in node.names}
        # ``from package import module``: the package's own code counts only when a name
        # imported is not a module of it
        return names if all(map(_is_module, names)) else {base, *names}
    return set()


def _top_level(tree: ast.Module):
    """Statements run at import time: module level, and inside if/try blocks there (``if
    TYPE_CHECKING:`` too: a cycle a type checker walks is one a reader walks)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            todo += node.body + node.orelse + getattr(node, "finalbody", []) + \
                [s for h in getattr(node, "handlers", []) for s in h.body]


def import_graph(packages: tuple[str, ...], *, lazy: bool = False,
                 exclude: tuple[str, ...] = ()) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = module_name(path)
            if any(name.startswith(prefix) for prefix in exclude):
                continue
            tree = ast.parse(path.read_text(), str(path))
            nodes = ast.walk(tree) if lazy else _top_level(tree)
            targets: set[str] = set()
            for node in nodes:
                targets |= _targets(node, name, path.name == "__init__.py")
            # a module's own packages are imported before it: not an edge of a cycle
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
            graph[name] = {t for t in targets - ancestors - {name}
                           if t.split(".")[0] in packages and _is_module(t)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a chain of imports (A imports B … imports A), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return exc.args[1][::-1]  # graphlib lists each module before the one importing it
    return None
