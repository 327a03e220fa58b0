"""SCIM filters and sortBy → SQLAlchemy expressions over ``resources`` (RFC 7644 §3.4.2.2–3).

``filter_clause(node, schema)`` turns a parsed filter (``libs.scim.filter``) into one boolean
expression over ``tables.resources``; the caller adds ``app``/``resource_type`` and selects.
Every value is a bound parameter; the same expression runs on SQLite and PostgreSQL.

Where an attribute is looked up:

- ``resources`` columns: ``id``, ``externalId`` (exact), User ``userName`` / Group
  ``displayName`` (``name_key``, folded), ``active``, ``meta.created``/``meta.lastModified``
  (instants; the value must be an xsd:dateTime), ``meta.resourceType``, ``meta.version``
  (``W/"3"``, ``"3"`` or ``3``; ``eq``/``ne`` only).
- membership: Group ``members``/``members.value``/``members.type`` and User
  ``groups``/``groups.value``/``groups.display`` go through ``group_members``.
- everything else (User ``displayName`` included: its column keeps the original case)
  through ``resource_values`` rows as written by ``libs.store.values.flatten``, as
  ``resources.pk IN (SELECT resource_pk …)`` so the ``(path, ci_key)`` index can drive.

Semantics: exactly ``libs.scim.evaluate``'s (property-tested against it):

- A comparison holds when SOME value of the path satisfies it; a missing attribute
  satisfies nothing, except ``ne``, which is ``not eq`` (true when missing, false when any
  value equals). ``eq null`` holds when the attribute has no value, ``ne null`` when it has
  one; ``null`` with any other operator is False.
- ``pr``: some assigned value (``null``, ``""``, ``[]``, ``{}`` are unassigned and never
  stored); a complex attribute is present when any of its sub-attributes is.
- Every sub-expression is two-valued (never SQL NULL), so ``not (title eq "x")`` keeps the
  users without a title.
- Strings compare per ``caseExact``: folded (``values.fold``) on both sides otherwise;
  ``co``/``sw``/``ew`` are ``LIKE`` with ``%``/``_``/``!`` escaped; ``gt``/``ge``/``lt``/``le``
  compare code points (``COLLATE "C"`` on PostgreSQL, SQLite's BINARY), not the locale.
  Booleans allow ``eq``/``ne`` only; numbers and dateTimes compare as numbers/instants and
  refuse ``co``/``sw``/``ew``. A value of the wrong JSON type (``active eq "true"``,
  ``title eq 5``) compares False; an unparseable dateTime is ``InvalidFilter``.
- A complex attribute without a sub-attribute compares its ``value`` (``emails eq "x"``,
  ``members eq "<id>"``, ``manager eq "<id>"``); one without ``value`` (``name``,
  ``addresses``) supports ``pr`` only.
- ``attr[filter]``: SOME element of ``attr`` (rows sharing an ``ordinal``; one member row)
  satisfies the whole inner filter, ``and``/``or``/``not`` included.
- An extension attribute may be named without its URN when no core attribute has that
  name (``entra.resolve_attribute``; Entra sends ``manager eq "…"``).
- Unknown attributes, binary and writeOnly ones, ``meta.location``, nested value filters and
  operators the type refuses raise ``InvalidFilter``, never a silently wrong result.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, exists, false, func, literal, not_, or_, select, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from libs.scim import entra
from libs.scim.errors import InvalidFilter
from libs.scim.filter import And, AttrPath, Compare, Filter, Not, Or, Present, ValuePath, operands
from libs.scim.schemas import GROUPS, USERS, AttrRef, Attribute, ResourceSchema
from libs.store.tables import KEY_PREFIX, members, resource_values, resources
from libs.store.values import column_name_attribute, fold, parse_datetime

R = resources.c
_ESCAPE = "!"
_ORDER_OPS = frozenset({"gt", "ge", "lt", "le"})
_LIKE_OPS = frozenset({"co", "sw", "ew"})
_VERSION = re.compile(r'(?:[Ww]/)?"?(\d{1,9})"?')


# --- dialect helpers -------------------------------------------------------------------

class bytewise(FunctionElement):  # noqa: N801 - reads as a SQL function
    """``expr COLLATE "C"`` on PostgreSQL (code-point order, as SQLite's default BINARY)."""

    type = Text()
    name = "bytewise"
    inherit_cache = True


@compiles(bytewise)
def _bytewise_default(element: bytewise, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(bytewise, "postgresql")
def _bytewise_postgresql(element: bytewise, compiler: Any, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)}) COLLATE "C"'


class strpos(FunctionElement):  # noqa: N801
    """1-based position of a substring, 0 when absent: ``instr`` (SQLite) / ``strpos`` (PostgreSQL)."""

    name = "strpos"
    inherit_cache = True


@compiles(strpos)
def _strpos_default(element: strpos, compiler: Any, **kw: Any) -> str:
    return f"strpos({compiler.process(element.clauses, **kw)})"


@compiles(strpos, "sqlite")
def _strpos_sqlite(element: strpos, compiler: Any, **kw: Any) -> str:
    return f"instr({compiler.process(element.clauses, **kw)})"


def _like_escape(text: str) -> str:
    return text.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


def _text_op(expr: Any, op: str, value: str, *, case_exact: bool) -> ColumnElement[bool]:
    """``expr op value`` for strings; ``expr`` already holds folded text when not ``case_exact``."""
    if op == "eq":
        return expr == value
    if op in _ORDER_OPS:
        target = bytewise(expr)
        return {"gt": target > value, "ge": target >= value, "lt": target < value, "le": target <= value}[op]
    escaped = _like_escape(value)
    pattern = {"co": f"%{escaped}%", "sw": f"{escaped}%", "ew": f"%{escaped}"}[op]
    cond = expr.like(pattern, escape=_ESCAPE)
    if case_exact:  # SQLite's LIKE ignores ASCII case: check the match exactly too.
        n = len(value)
        exact = {
            "co": strpos(expr, literal(value, Text())) > 0,
            "sw": func.substr(expr, 1, n) == value,
            "ew": func.substr(expr, func.length(expr) - n + 1) == value,
        }[op]
        cond = and_(cond, exact)
    return cond


def _ordered(expr: Any, op: str, value: Any) -> ColumnElement[bool]:
    return {"eq": expr == value, "gt": expr > value, "ge": expr >= value, "lt": expr < value,
            "le": expr <= value}[op]


# --- values -----------------------------------------------------------------------------

_WRONG = object()
"""A filter value of the wrong JSON type for the attribute: the comparison is False."""


def _typed(attribute: Attribute, value: Any, what: str) -> Any:
    """The filter value in the form the attribute's rows hold, or ``_WRONG``.

    As ``libs.scim.evaluate``: strings compare with strings only, booleans with ``true``/``false``,
    numbers with numbers. An unparseable dateTime string is ``InvalidFilter`` (a client error
    worth a 400 rather than an empty list).
    """
    kind = attribute.type
    if kind == "boolean":
        return value if isinstance(value, bool) else _WRONG
    if kind in ("integer", "decimal"):
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _WRONG
    if kind == "dateTime":
        if not isinstance(value, str):
            return _WRONG
        moment = parse_datetime(value)
        if moment is None:
            raise InvalidFilter(f"{what} is a dateTime: {value[:100]!r} is not an xsd:dateTime.")
        return moment
    return value if isinstance(value, str) else _WRONG


def _check_op(attribute: Attribute, op: str, what: str) -> None:
    kind = attribute.type
    if kind == "boolean" and op not in ("eq", "ne"):
        raise InvalidFilter(f"{what} is a boolean: only eq and ne apply.")
    if kind in ("integer", "decimal", "dateTime") and op in _LIKE_OPS:
        raise InvalidFilter(f"{what} is a {kind}: {op} does not apply.")


# --- the value table --------------------------------------------------------------------

def _row_compare(v: Any, attribute: Attribute, op: str, value: Any, what: str) -> ColumnElement[bool]:
    """Condition on one ``resource_values`` row ``v`` for a positive operator (not ``ne``), non-null value."""
    kind = attribute.type
    typed = _typed(attribute, value, what)
    if typed is _WRONG:
        return false()
    if kind == "boolean":
        return v.num_value == (1.0 if typed else 0.0)
    if kind in ("integer", "decimal"):
        return _ordered(v.num_value, op, typed)
    if kind == "dateTime":
        return _ordered(v.num_value, op, typed.timestamp())
    text = typed
    folded = fold(text)
    if op == "eq":
        if attribute.case_exact:
            return and_(v.ci_key == folded[:KEY_PREFIX], v.str_value == text)
        return and_(v.ci_key == folded[:KEY_PREFIX], v.ci_value == folded)
    if attribute.case_exact:
        return _text_op(v.str_value, op, text, case_exact=True)
    return _text_op(v.ci_value, op, folded, case_exact=False)


def _row_present(v: Any) -> ColumnElement[bool]:
    return v.str_value != ""


def _subpaths(ref: AttrRef) -> list[str]:
    return [AttrRef(ref.schema, ref.attribute, s).path.lower() for s in ref.attribute.sub_attributes
            if s.type != "binary" and s.mutability != "writeOnly"]


# --- compiler ---------------------------------------------------------------------------

class _Compiler:
    def __init__(self, schema: ResourceSchema) -> None:
        self.schema = schema
        self.is_group = schema.name == GROUPS.name
        self.name_attr = column_name_attribute(schema)

    def compile(self, node: Filter) -> ColumnElement[bool]:
        # A chain becomes one flat AND/OR: recursion (ours and SQLAlchemy's compiler's) then
        # follows the filter's nesting, never its number of terms (issue 16: 1,100 terms, a 500).
        if isinstance(node, And):
            return and_(*(self.compile(n) for n in operands(node, And)))
        if isinstance(node, Or):
            return or_(*(self.compile(n) for n in operands(node, Or)))
        if isinstance(node, Not):
            return not_(self.compile(node.inner))
        if isinstance(node, ValuePath):
            return self.value_path(node)
        if isinstance(node, Present):
            return self.present(self.resolve(node.path), node.path.text)
        if isinstance(node, Compare):
            return self.comparison(self.resolve(node.path), node.op, node.value, node.path.text)
        raise InvalidFilter(f"Unsupported filter node {type(node).__name__}.")

    def resolve(self, path: AttrPath) -> AttrRef:
        ref = resolve(self.schema, path.text)
        if ref.leaf.mutability == "writeOnly" or ref.leaf.type == "binary":
            raise InvalidFilter(f"{path.text} cannot be filtered on.")
        return ref

    def is_membership(self, ref: AttrRef) -> bool:
        if ref.schema != self.schema.core.urn:
            return False
        return ref.attribute.name.lower() == ("members" if self.is_group else "groups")

    def comparison(self, ref: AttrRef, op: str, value: Any, what: str) -> ColumnElement[bool]:
        """The shared rules of every comparison: ``ne`` is ``not eq``, the implicit ``value``,
        the operator check, ``eq null``/``ne null``, values of the wrong type."""
        if op == "ne":
            return not_(self.comparison(ref, "eq", value, what))
        ref = _implicit_value(ref, what)
        _check_op(ref.leaf, op, what)
        if value is None:
            return not_(self.present(ref, what)) if op == "eq" else false()
        if self.is_membership(ref):
            return self.membership(ref, lambda other, sub: _member_compare(other, sub, op, value, what,
                                                                           self.is_group))
        column = self.column_compare(ref, op, value, what)
        if column is not None:
            return column
        path = ref.path.lower()
        return self.values_in(lambda v: and_(v.path == path, _row_compare(v, ref.leaf, op, value, what)))

    def present(self, ref: AttrRef, what: str) -> ColumnElement[bool]:
        if self.is_membership(ref):
            return self.membership(ref, lambda other, sub: true())
        column = self.column_present(ref, what)
        if column is not None:
            return column
        if ref.sub is None and ref.attribute.type == "complex":
            paths = _subpaths(ref)
            return self.values_in(lambda v: and_(v.path.in_(paths), _row_present(v)))
        path = ref.path.lower()
        return self.values_in(lambda v: and_(v.path == path, _row_present(v)))

    def values_in(self, where: Callable[[Any], ColumnElement[bool]]) -> ColumnElement[bool]:
        v = resource_values.alias("v")
        return R.pk.in_(select(v.c.resource_pk).where(where(v.c)))

    # resources columns

    def column_of(self, ref: AttrRef) -> str | None:
        path = ref.path.lower()
        if path in ("id", "externalid") or path == "meta" or path.startswith("meta."):
            return path
        if path == self.name_attr:
            return "name"
        if path == "active" and not self.is_group:
            return "active"
        return None

    def column_present(self, ref: AttrRef, what: str) -> ColumnElement[bool] | None:
        column = self.column_of(ref)
        if column is None:
            return None
        if column == "externalid":
            return and_(R.external_id.is_not(None), R.external_id != "")
        if column == "name":
            return R.name_key != ""
        if column == "active":
            return R.active.is_not(None)
        return true()  # id and meta are always there

    def column_compare(self, ref: AttrRef, op: str, value: Any, what: str) -> ColumnElement[bool] | None:
        column = self.column_of(ref)
        if column is None:
            return None
        if column == "meta.version":
            if op != "eq":
                raise InvalidFilter(f"{what}: only eq and ne apply.")
            m = _VERSION.fullmatch(str(value).strip()) if isinstance(value, (str, int)) and not isinstance(
                value, bool) else None
            return R.version == int(m.group(1)) if m else false()
        if column == "meta.location":
            raise InvalidFilter(f"{what} cannot be filtered on.")
        typed = _typed(ref.leaf, value, what)
        if typed is _WRONG:
            return false()
        if column == "id":
            return _text_op(R.id, op, typed, case_exact=True)
        if column == "externalid":
            return and_(R.external_id.is_not(None), R.external_id != "",
                        _text_op(R.external_id, op, typed, case_exact=True))
        if column == "name":
            return _text_op(R.name_key, op, fold(typed), case_exact=False)
        if column == "active":
            return and_(R.active.is_not(None), R.active == typed)
        if column in ("meta.created", "meta.lastmodified"):
            return _ordered(R.created if column == "meta.created" else R.last_modified, op, typed)
        if column == "meta.resourcetype":
            return _text_op(R.resource_type, op, typed, case_exact=True)
        raise InvalidFilter(f"{what} cannot be filtered on.")  # pragma: no cover - meta itself is complex

    # membership (group_members)

    def membership(self, ref: AttrRef, element: Callable[[Any, Attribute | None], ColumnElement[bool]]
                   ) -> ColumnElement[bool]:
        """Some member (of a group) / group (of a user) row ``other`` satisfies ``element``."""
        other = resources.alias("other")
        gm = members.alias("gm")
        if self.is_group:
            mine, theirs = gm.c.group_pk, gm.c.member_pk
        else:
            mine, theirs = gm.c.member_pk, gm.c.group_pk
        kinds = (USERS.name, GROUPS.name) if self.is_group else (GROUPS.name,)
        # Correlated on the app so the (app, resource_type, id) index finds the other side.
        stmt = select(mine).select_from(gm.join(other, other.c.pk == theirs)).where(
            other.c.app == R.app, other.c.resource_type.in_(kinds), element(other.c, ref.sub))
        return R.pk.in_(stmt)

    # value paths: attr[filter]

    def value_path(self, node: ValuePath) -> ColumnElement[bool]:
        what = node.path.text
        if node.path.sub is not None:
            raise InvalidFilter(f"{what!r}: a value filter applies to a whole attribute.")
        ref = self.resolve(node.path)
        if ref.attribute.type != "complex":
            raise InvalidFilter(f"{what}[…] needs a complex attribute.")
        if self.is_membership(ref):
            return self.membership(ref, lambda other, _sub: self.member_element(node.filter, ref, other, what))
        conjuncts = operands(node.filter, And)
        # Drive the lookup from one positive comparison the element must satisfy, through the
        # (path, ci_key) index: preferably ``value eq`` (Entra's emails[type eq "work"].value eq "x").
        positive = [c for c in conjuncts if isinstance(c, Compare) and c.op != "ne" and c.value is not None]
        positive.sort(key=lambda c: (c.op != "eq", c.path.name.lower() != "value"))
        a = resource_values.alias("a")
        if positive:
            anchor = positive[0]
            sub_ref = self.sub_ref(ref, anchor.path, what)
            _check_op(sub_ref.leaf, anchor.op, what)
            where = [a.c.path == sub_ref.path.lower(),
                     _row_compare(a.c, sub_ref.leaf, anchor.op, anchor.value, what),
                     *(self.element(c, ref, a.c, what) for c in conjuncts if c is not anchor)]
        else:
            where = [a.c.path.in_(_subpaths(ref)), self.element(node.filter, ref, a.c, what)]
        return R.pk.in_(select(a.c.resource_pk).where(*where))

    def sub_ref(self, ref: AttrRef, path: AttrPath, what: str) -> AttrRef:
        sub = ref.attribute.sub(path.name) if path.uri is None and path.sub is None else None
        if sub is None:
            raise InvalidFilter(f"{path.text!r} is not a sub-attribute of {ref.attribute.name} ({what}).")
        if sub.type == "binary" or sub.mutability == "writeOnly":
            raise InvalidFilter(f"{ref.attribute.name}.{sub.name} cannot be filtered on.")
        return AttrRef(ref.schema, ref.attribute, sub)

    def element(self, node: Filter, ref: AttrRef, a: Any, what: str) -> ColumnElement[bool]:
        """``node`` holds for the element (resource_pk, ordinal) of the anchor row ``a``."""
        if isinstance(node, And):
            return and_(*(self.element(n, ref, a, what) for n in operands(node, And)))
        if isinstance(node, Or):
            return or_(*(self.element(n, ref, a, what) for n in operands(node, Or)))
        if isinstance(node, Not):
            return not_(self.element(node.inner, ref, a, what))
        if isinstance(node, ValuePath):
            raise InvalidFilter(f"A value filter cannot be nested inside another ({what}).")
        sub_ref = self.sub_ref(ref, node.path, what)
        path = sub_ref.path.lower()
        v = resource_values.alias("e")

        def some(cond: ColumnElement[bool]) -> ColumnElement[bool]:
            return exists().where(v.c.resource_pk == a.resource_pk, v.c.ordinal == a.ordinal, v.c.path == path, cond)

        if isinstance(node, Present):
            return some(_row_present(v.c))
        op = "eq" if node.op == "ne" else node.op
        _check_op(sub_ref.leaf, op, what)
        if node.value is None:
            cond = not_(some(_row_present(v.c))) if op == "eq" else false()
        else:
            cond = some(_row_compare(v.c, sub_ref.leaf, op, node.value, what))
        return not_(cond) if node.op == "ne" else cond

    def member_element(self, node: Filter, ref: AttrRef, other: Any, what: str) -> ColumnElement[bool]:
        """``node`` holds for the member/group row ``other`` (one element of members/groups)."""
        if isinstance(node, And):
            return and_(*(self.member_element(n, ref, other, what) for n in operands(node, And)))
        if isinstance(node, Or):
            return or_(*(self.member_element(n, ref, other, what) for n in operands(node, Or)))
        if isinstance(node, Not):
            return not_(self.member_element(node.inner, ref, other, what))
        if isinstance(node, ValuePath):
            raise InvalidFilter(f"A value filter cannot be nested inside another ({what}).")
        sub = self.sub_ref(ref, node.path, what).sub
        _member_column(other, sub, what, self.is_group)  # supported at all?
        if isinstance(node, Present):
            return true()
        op = "eq" if node.op == "ne" else node.op
        _check_op(sub, op, what)  # type: ignore[arg-type]
        if node.value is None:
            cond = false()  # a member's value/type/display is never null
        else:
            cond = _member_compare(other, sub, op, node.value, what, self.is_group)
        return not_(cond) if node.op == "ne" else cond


def _implicit_value(ref: AttrRef, what: str) -> AttrRef:
    """A complex attribute compared without a sub-attribute compares its ``value``."""
    if ref.sub is not None or ref.attribute.type != "complex":
        return ref
    value_sub = ref.attribute.sub("value")
    if value_sub is None or value_sub.type == "binary":
        raise InvalidFilter(f"{what} is complex: compare one of its sub-attributes.")
    return AttrRef(ref.schema, ref.attribute, value_sub)


def _member_column(other: Any, sub: Attribute | None, what: str, is_group: bool) -> tuple[Any, bool]:
    """(column of the member/group row, case_exact) for members.value/type, groups.value/display."""
    name = (sub.name if sub is not None else "value").lower()
    if name == "value":
        return other.id, True
    if name == "type" and is_group:
        return func.lower(other.resource_type), False  # "User"/"Group": ASCII, SQL lower() is exact
    if name == "display" and not is_group:
        return other.name_key, False
    raise InvalidFilter(f"{what} cannot be filtered on.")


def _member_compare(other: Any, sub: Attribute | None, op: str, value: Any, what: str,
                    is_group: bool) -> ColumnElement[bool]:
    column, case_exact = _member_column(other, sub, what, is_group)
    if not isinstance(value, str):
        return false()
    return _text_op(column, op, value if case_exact else fold(value), case_exact=case_exact)


def resolve(schema: ResourceSchema, text: str) -> AttrRef:
    """``schema.resolve`` that also finds an extension attribute named without its URN; else InvalidFilter."""
    ref = entra.resolve_attribute(schema, text)
    if ref is None:
        raise InvalidFilter(f"Unknown attribute {text[:200]!r} for {schema.name}.")
    return ref


def filter_clause(node: Filter, schema: ResourceSchema) -> ColumnElement[bool]:
    """The SQL condition on ``resources`` rows of ``schema``'s type matching ``node``."""
    return _Compiler(schema).compile(node)


def name_key_of(node: Filter, schema: ResourceSchema) -> str | None:
    """The ``name_key`` that ``node`` pins when it is exactly ``<name> eq "<string>"`` (User
    ``userName``, Group ``displayName``: Entra's matching query), else None.

    Such a filter is one probe of the ``(app, resource_type, name_key)`` index (one row for a
    userName; group names may repeat, per app); the store runs it as a statement built once
    instead of compiling the filter.
    """
    if not isinstance(node, Compare) or node.op != "eq" or not isinstance(node.value, str):
        return None
    ref = resolve(schema, node.path.text)
    if ref.sub is not None or ref.path.lower() != column_name_attribute(schema):
        return None
    return fold(node.value)


def sort_clause(sort_by: str | None, descending: bool, schema: ResourceSchema) -> list[Any]:
    """ORDER BY terms for ``sortBy``: missing values last ascending, first descending (RFC 7644
    §3.4.2.3), strings folded unless caseExact and in code-point order, then ``resources.pk``."""
    if not sort_by:
        return [R.pk.asc()]
    ref = resolve(schema, sort_by.strip())
    path = ref.path.lower()
    top = ref.attribute.name.lower()
    is_group = schema.name == GROUPS.name
    if ref.leaf.mutability == "writeOnly" or ref.leaf.type == "binary" or (
            (is_group and top == "members") or (not is_group and top == "groups")):
        raise InvalidFilter(f"Cannot sort by {sort_by[:200]!r}.")
    columns: dict[str, Any] = {
        "id": bytewise(R.id), "externalid": bytewise(R.external_id),
        column_name_attribute(schema): bytewise(R.name_key),
        "meta.created": R.created, "meta.lastmodified": R.last_modified,
        "meta.resourcetype": bytewise(R.resource_type), "meta.version": R.version,
    }
    if schema.name == USERS.name:
        columns["active"] = R.active
    if path in columns:
        expr = columns[path]
    elif path == "meta" or path.startswith("meta."):
        raise InvalidFilter(f"Cannot sort by {sort_by[:200]!r}.")
    else:
        if ref.sub is None and ref.attribute.type == "complex":
            value_sub = ref.attribute.sub("value")
            if value_sub is None or value_sub.type == "binary":
                raise InvalidFilter(f"Cannot sort by complex {sort_by[:200]!r}: name a sub-attribute.")
            ref = AttrRef(ref.schema, ref.attribute, value_sub)
            path = ref.path.lower()
        leaf = ref.leaf
        v = resource_values.alias("s")
        if leaf.type in ("boolean", "integer", "decimal", "dateTime"):
            column: Any = v.c.num_value
        else:
            column = bytewise(v.c.str_value if leaf.case_exact else v.c.ci_value)
        sub = select(func.min(column)).where(v.c.resource_pk == R.pk, v.c.path == path).scalar_subquery()
        expr = sub if leaf.type in ("boolean", "integer", "decimal", "dateTime") else bytewise(sub)
    term = expr.desc().nulls_first() if descending else expr.asc().nulls_last()
    return [term, R.pk.asc()]
