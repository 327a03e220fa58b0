"""Evaluate a filter AST against a document in memory (RFC 7644 §3.4.2.2).

Used by the PATCH engine for value filters (``emails[type eq "work"]``) and as the
reference semantics that ``libs.store.query`` (the SQL translation of the same AST) is
property-tested against. The rules, precisely:

**Resolving names.** With a ``schema``, a path resolves through
``libs.scim.entra.resolve_attribute`` (case-insensitive; URN-qualified or not; an
unqualified name only an extension defines, like Entra's ``manager``, resolves there).
With ``within`` (an attribute, for a value filter), names are sub-attributes of it and
may carry neither a URN nor a sub-attribute. An unknown name is ``InvalidFilter``. With
neither (schema-less), names are looked up case-insensitively in the dicts and every
string compares case-insensitively. Document keys are matched case-insensitively too.

**Values of a path.** A simple attribute yields its value. ``attr.sub`` on a multi-valued
attribute yields the ``sub`` of every element ("any element" semantics); on a single
complex attribute, its ``sub``. A complex attribute compared without a sub-attribute is
compared through its ``value`` sub-attribute (``manager eq "id"``, ``members eq "id"``,
``emails co "@x"``); a complex attribute without ``value`` can only be tested with ``pr``.

**Operators.** A comparison holds when *some* value of the path satisfies it.

- ``pr``: some value is not unassigned (``null``, ``""``, ``[]`` and ``{}`` are unassigned).
- ``eq``: equal. ``eq null`` holds when the attribute is not present.
- ``ne``: exactly ``not eq`` — so a missing attribute is ``ne`` anything, and a
  multi-valued attribute is ``ne x`` only when *no* element equals ``x``.
- ``co``/``sw``/``ew``: substring/prefix/suffix; strings only (string, reference, binary).
- ``gt``/``ge``/``lt``/``le``: order; strings by code point, numbers numerically, dateTimes
  as instants (no zone = UTC). ``null`` as the operand of any operator but eq/ne → False.
- Strings compare after ``str.lower()`` on both sides unless the attribute is ``caseExact``.
- A value of the wrong JSON type for the attribute (string vs number, ``"true"`` vs
  ``true``, an unparseable dateTime on either side) makes the comparison False, not an
  error.
- ``InvalidFilter`` (RFC 7644 Table 9): any operator but ``eq``/``ne``/``pr`` on a boolean;
  ``gt``/``ge``/``lt``/``le`` on binary; ``co``/``sw``/``ew`` on boolean, integer, decimal
  or dateTime; any comparison on a complex attribute without ``value``; a value filter
  nested inside another, or on an attribute that is not complex.
- ``and``/``or``/``not`` are the Boolean connectives over the rules above.
- ``attr[filter]``: some element of ``attr`` (a single complex attribute counts as a list
  of one) satisfies ``filter`` evaluated ``within`` ``attr``.
"""

from __future__ import annotations

from typing import Any

from libs.scim import entra
from libs.scim.errors import InvalidFilter
from libs.scim.filter import And, AttrPath, Compare, Filter, Not, Or, Present, ValuePath, operands
from libs.scim.schemas import Attribute, ResourceSchema
from libs.scim.validate import is_unassigned, parse_datetime

_ORDER_OPS = frozenset({"gt", "ge", "lt", "le"})
_TEXT_OPS = frozenset({"co", "sw", "ew"})


def matches(
    node: Filter, element: dict[str, Any], schema: ResourceSchema | None, *, within: Attribute | None = None
) -> bool:
    """Whether ``element`` (a resource, or one element of ``within``) satisfies ``node``."""
    # Chains in a loop: recursion follows the filter's nesting, not its number of terms.
    if isinstance(node, And):
        return all(matches(n, element, schema, within=within) for n in operands(node, And))
    if isinstance(node, Or):
        return any(matches(n, element, schema, within=within) for n in operands(node, Or))
    if isinstance(node, Not):
        return not matches(node.inner, element, schema, within=within)
    if isinstance(node, Present):
        values, _ = _values(node.path, element, schema, within, implicit_value=False)
        return any(not is_unassigned(v) for v in values)
    if isinstance(node, Compare):
        values, leaf = _values(node.path, element, schema, within, implicit_value=True)
        return _compare(node, values, leaf, schemaless=schema is None and within is None)
    if isinstance(node, ValuePath):
        return _value_path(node, element, schema, within)
    raise InvalidFilter(f"Unsupported filter node {type(node).__name__}.")  # pragma: no cover


def _get(container: Any, name: str) -> Any:
    if not isinstance(container, dict):
        return None
    if name in container:
        return container[name]
    lowered = name.lower()
    for key, value in container.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    return [value]


def _values(
    path: AttrPath,
    element: dict[str, Any],
    schema: ResourceSchema | None,
    within: Attribute | None,
    *,
    implicit_value: bool,
) -> tuple[list[Any], Attribute | None]:
    """The values ``path`` denotes in ``element`` and the attribute definition they share."""
    if within is not None:
        sub = within.sub(path.name) if path.uri is None and path.sub is None else None
        if sub is None:
            raise InvalidFilter(f"{path.text!r} is not a sub-attribute of {within.name}.")
        return _flatten(_get(element, sub.name)), sub
    if schema is None:
        container = _get(element, path.uri) if path.uri else element
        values = _flatten(_get(container, path.name))
        if path.sub:
            values = [_get(v, path.sub) for v in values]
        return [x for v in values for x in _flatten(v)], None
    ref = entra.resolve_attribute(schema, path.text)
    if ref is None:
        raise InvalidFilter(f"{path.text!r} is not an attribute of a {schema.name}.")
    container = element if ref.schema == schema.core.urn else _get(element, ref.schema)
    raw = _flatten(_get(container, ref.attribute.name))
    leaf = ref.sub
    if leaf is None and ref.attribute.type == "complex":
        if not implicit_value:
            return raw, ref.attribute
        leaf = ref.attribute.sub("value")
        if leaf is None:
            raise InvalidFilter(f"{path.text!r} is complex: compare one of its sub-attributes.")
    if leaf is not None and leaf is not ref.attribute:
        return [_get(v, leaf.name) for v in raw], leaf
    return raw, ref.attribute


def _value_path(
    node: ValuePath, element: dict[str, Any], schema: ResourceSchema | None, within: Attribute | None
) -> bool:
    if within is not None:
        raise InvalidFilter("A value filter cannot be nested inside another.")
    if node.path.sub is not None:
        raise InvalidFilter(f"{node.path.text!r}: a value filter applies to a whole attribute.")
    if schema is None:
        container = _get(element, node.path.uri) if node.path.uri else element
        items = _flatten(_get(container, node.path.name))
        return any(isinstance(i, dict) and matches(node.filter, i, None) for i in items)
    ref = entra.resolve_attribute(schema, node.path.text)
    if ref is None:
        raise InvalidFilter(f"{node.path.text!r} is not an attribute of a {schema.name}.")
    if ref.attribute.type != "complex":
        raise InvalidFilter(f"{node.path.text!r} is not complex; a value filter needs sub-attributes.")
    container = element if ref.schema == schema.core.urn else _get(element, ref.schema)
    items = _flatten(_get(container, ref.attribute.name))
    return any(isinstance(i, dict) and matches(node.filter, i, schema, within=ref.attribute) for i in items)


def _compare(node: Compare, values: list[Any], leaf: Attribute | None, *, schemaless: bool) -> bool:
    op = node.op
    if op == "ne":
        return not _compare(Compare(node.path, "eq", node.value), values, leaf, schemaless=schemaless)
    kind = leaf.type if leaf is not None else None
    _check_operator(op, kind, node.path)
    if node.value is None:
        return op == "eq" and all(is_unassigned(v) for v in values)
    case_exact = leaf.case_exact if leaf is not None else False
    return any(_holds(op, v, node.value, kind, case_exact) for v in values if not is_unassigned(v))


def _check_operator(op: str, kind: str | None, path: AttrPath) -> None:
    if kind == "complex":
        raise InvalidFilter(f"{path.text!r} is complex: compare one of its sub-attributes.")
    if kind == "boolean" and op != "eq":
        raise InvalidFilter(f"{path.text!r} is a boolean: only eq, ne and pr apply.")
    if kind == "binary" and op in _ORDER_OPS:
        raise InvalidFilter(f"{path.text!r} is binary: {op} does not apply.")
    if kind in ("integer", "decimal", "dateTime") and op in _TEXT_OPS:
        raise InvalidFilter(f"{path.text!r} is a {kind}: {op} does not apply.")


def _holds(op: str, actual: Any, expected: Any, kind: str | None, case_exact: bool) -> bool:
    if kind is None:
        kind = _kind_of(actual)
        if kind == "boolean" and op != "eq":
            return False
        if kind in ("integer", "decimal") and op in _TEXT_OPS:
            return False
    if kind == "boolean":
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if kind in ("integer", "decimal"):
        if not _is_number(actual) or not _is_number(expected):
            return False
        return _order(op, actual, expected)
    if kind == "dateTime":
        left, right = parse_datetime(actual), parse_datetime(expected)
        if left is None or right is None:
            return False
        return _order(op, left, right)
    if not isinstance(actual, str) or not isinstance(expected, str):
        return False
    if not case_exact:
        actual, expected = actual.lower(), expected.lower()
    if op == "co":
        return expected in actual
    if op == "sw":
        return actual.startswith(expected)
    if op == "ew":
        return actual.endswith(expected)
    return _order(op, actual, expected)


def _order(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    if op == "le":
        return bool(left <= right)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "decimal"
    if isinstance(value, str):
        return "string"
    return None
