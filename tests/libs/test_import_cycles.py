"""No import cycles: a module of libs/ can be read, tested and moved after the modules it
imports, never together with them. Read from the source (tests/support/import_graph.py),
counting the imports a type checker follows (``if TYPE_CHECKING:``) and the ones made
inside functions."""

from __future__ import annotations

from tests.support.import_graph import find_cycle, import_graph


def test_libs_has_no_import_cycle_even_through_imports_inside_functions():
    cycle = find_cycle(import_graph(("libs",), lazy=True))
    assert cycle is None, " imports ".join(cycle)


def test_services_and_libs_have_no_import_cycle_even_through_imports_inside_functions():
    # the CLI's command modules imported each other inside functions (issue 20)
    cycle = find_cycle(import_graph(("libs", "services"), lazy=True))
    assert cycle is None, " imports ".join(cycle)


def test_the_checker_finds_a_cycle_and_names_it_as_a_chain_of_imports():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) in (["a", "b", "c", "a"], ["b", "c", "a", "b"],
                                                                 ["c", "a", "b", "c"])
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_the_imports_a_type_checker_follows(tmp_path, monkeypatch):
    from tests.support import import_graph as module

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/__init__.py").write_text("")
    (tmp_path / "pkg/one.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from pkg.two import X\n")
    (tmp_path / "pkg/two.py").write_text("from pkg import one\n\ndef f():\n    from pkg import three\n")
    (tmp_path / "pkg/three.py").write_text("")
    monkeypatch.setattr(module, "ROOT", tmp_path)
    assert module.import_graph(("pkg",)) == {"pkg": set(), "pkg.one": {"pkg.two"}, "pkg.two": {"pkg.one"},
                                             "pkg.three": set()}
    assert module.import_graph(("pkg",), lazy=True)["pkg.two"] == {"pkg.one", "pkg.three"}
