"""SCIM filter and PATCH path grammar (RFC 7644 §3.4.2.2, §3.5.2) → frozen AST nodes.

Why our own parser rather than scim2-filter-parser: that library renders SQL *strings*
for its own table layout, while we push filters down through SQLAlchemy expressions over
our value index (``libs.store.query``) and also evaluate them in memory (PATCH value
filters). A small recursive-descent parser gives both one AST, exact RFC error mapping
(``invalidFilter`` vs ``invalidPath``) and Entra's leniencies in one named place:

- ``emails[type eq "work"].value eq "x"`` — a value path followed by a sub-attribute in
  a *filter* (Entra's matching query); it means ``emails[type eq "work" and value eq "x"]``.
- ``externalId eq jyoung`` — an unquoted value (the SDK-era sample): read as a string.

Precedence is ``not`` > ``and`` > ``or`` (§3.4.2.2); keywords and attribute names are
case-insensitive.

Cost bounds (issue 16): a filter holds at most ``max_terms`` comparisons (each one a
subquery once translated) and nests at most ``MAX_DEPTH`` parentheses, ``not`` and value
paths deep. A chain ``a or b or …`` is a left-deep tree of binary nodes; whoever walks it
takes the chain's operands with ``operands`` (a loop), so recursion follows the nesting,
never the number of terms.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Union

from libs.scim.errors import InvalidFilter, InvalidPath, ScimError

COMPARE_OPS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"})
MAX_FILTER_LENGTH = 10_000
MAX_DEPTH = 32
MAX_FILTER_TERMS = 200
"""Default of SCIM_MAX_FILTER_TERMS: a 10,000-character filter of ``id eq "<uuid>"`` terms holds ~200."""

Value = Union[str, int, float, bool, None]


@dataclass(frozen=True)
class AttrPath:
    """``[URI ":"] ATTRNAME ["." subAttr]``, unresolved; see ``ResourceSchema.resolve``."""

    uri: str | None
    name: str
    sub: str | None = None

    @property
    def text(self) -> str:
        head = f"{self.uri}:{self.name}" if self.uri else self.name
        return f"{head}.{self.sub}" if self.sub else head

    def with_sub(self, sub: str) -> AttrPath:
        return AttrPath(self.uri, self.name, sub)


@dataclass(frozen=True)
class Compare:
    path: AttrPath
    op: str
    value: Value


@dataclass(frozen=True)
class Present:
    path: AttrPath


@dataclass(frozen=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Not:
    inner: Filter


@dataclass(frozen=True)
class ValuePath:
    """``attr[filter]``: some element of the multi-valued ``attr`` matches ``filter``."""

    path: AttrPath
    filter: Filter


Filter = Union[Compare, Present, And, Or, Not, ValuePath]


@dataclass(frozen=True)
class PatchPath:
    """A PATCH ``path``: ``attrPath`` or ``valuePath [subAttr]`` (RFC 7644 §3.5.2)."""

    attr: AttrPath
    filter: Filter | None = None
    sub: str | None = None


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<punct>[()\[\]])
      | (?P<word>[A-Za-z0-9_$:.+\-]+)
    )""",
    re.VERBOSE,
)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""What a JSON escape in a quoted value (``\\u0000``, ``\\ud800``) can decode to and no stored
string holds: PostgreSQL refuses NUL in text and the drivers cannot encode a lone surrogate,
so such a value would fail in the database (a 500 in the reader, a failed batch in the worker)
instead of being refused here."""
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NAME = r"\$?[A-Za-z][A-Za-z0-9_\-]*"
_ATTR = re.compile(rf"(?:(?P<uri>urn:[A-Za-z0-9.:_\-]+):)?(?P<name>{_NAME})(?:\.(?P<sub>{_NAME}))?", re.I)


def _tokenize(text: str, error: type[ScimError]) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].isspace():
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise error(f"Unexpected character at position {pos} in {text[:200]!r}.")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


def parse_attr_path(word: str, error: type[ScimError] = InvalidFilter) -> AttrPath:
    m = _ATTR.fullmatch(word)
    if not m:
        raise error(f"{word[:200]!r} is not a valid attribute path.")
    return AttrPath(m.group("uri"), m.group("name"), m.group("sub"))


def operands(node: Filter, kind: type[And] | type[Or]) -> list[Filter]:
    """The operands of the chain of ``kind`` nodes at ``node``, left to right, without recursion:
    ``a or b or c`` gives ``[a, b, c]`` however the binary nodes associate."""
    out: list[Filter] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, kind):
            stack += [current.right, current.left]
        else:
            out.append(current)
    return out


class _Parser:
    def __init__(self, text: str, error: type[ScimError], max_terms: int) -> None:
        self.error = error
        self.tokens = _tokenize(text, error)
        self.pos = 0
        self.depth = 0
        self.terms = 0
        self.max_terms = max_terms

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def next(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise self.error("The filter ends unexpectedly.")
        self.pos += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok and tok[0] == "word" and tok[1].lower() in words:
            self.pos += 1
            return tok[1].lower()
        return None

    def expect(self, punct: str) -> None:
        tok = self.next()
        if tok != ("punct", punct):
            raise self.error(f"Expected {punct!r} but found {tok[1][:100]!r}.")

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"The filter nests deeper than {MAX_DEPTH} levels.")

    # FILTER = term *("or" term)
    def parse_or(self) -> Filter:
        node = self.parse_and()
        while self.keyword("or"):
            node = Or(node, self.parse_and())
        return node

    def parse_and(self) -> Filter:
        node = self.parse_unary()
        while self.keyword("and"):
            node = And(node, self.parse_unary())
        return node

    def parse_unary(self) -> Filter:
        self.nested()
        try:
            tok = self.peek()
            if tok and tok[0] == "word" and tok[1].lower() == "not" and self.peek(1) == ("punct", "("):
                self.pos += 1
                return Not(self.parse_group())
            if tok == ("punct", "("):
                return self.parse_group()
            return self.parse_attr_expression()
        finally:
            self.depth -= 1

    def parse_group(self) -> Filter:
        self.expect("(")
        node = self.parse_or()
        self.expect(")")
        return node

    def parse_attr_expression(self) -> Filter:
        kind, word = self.next()
        if kind != "word":
            raise self.error(f"Expected an attribute name but found {word[:100]!r}.")
        path = parse_attr_path(word, self.error)
        if self.peek() == ("punct", "["):
            if path.sub:
                raise self.error(f"A value filter cannot follow a sub-attribute in {word[:100]!r}.")
            self.pos += 1
            inner = self.parse_or()
            self.expect("]")
            tok = self.peek()
            if tok and tok[0] == "word" and tok[1].startswith("."):
                # Entra: emails[type eq "work"].value eq "x" — fold the trailing comparison in.
                self.pos += 1
                sub = parse_attr_path(tok[1][1:], self.error)
                if sub.uri or sub.sub:
                    raise self.error(f"{tok[1][:100]!r} is not a sub-attribute.")
                inner = And(inner, self.parse_comparison(AttrPath(None, sub.name)))
            return ValuePath(path, inner)
        return self.parse_comparison(path)

    def parse_comparison(self, path: AttrPath) -> Filter:
        self.terms += 1
        if self.terms > self.max_terms:
            raise self.error(f"The filter has more than {self.max_terms} comparisons, the most this server evaluates "
                             "in one filter.")
        op = self.keyword("pr", *COMPARE_OPS)
        if op is None:
            tok = self.peek()
            raise self.error(f"Expected an operator after {path.text!r} but found {tok[1][:100] if tok else 'the end'!r}.")
        if op == "pr":
            return Present(path)
        return Compare(path, op, self.parse_value())

    def parse_value(self) -> Value:
        kind, word = self.next()
        if kind == "string":
            try:
                value = json.loads(word)
            except ValueError as exc:
                raise self.error(f"Invalid string literal {word[:100]!r}.") from exc
            if _UNSTORABLE.search(value):
                raise self.error("A string in a filter cannot hold U+0000 or a lone surrogate (U+D800-U+DFFF): "
                                 "no stored value holds one, and the database refuses them.")
            return value
        if kind != "word":
            raise self.error(f"Expected a value but found {word[:100]!r}.")
        lowered = word.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered == "null":
            return None
        if _NUMBER.fullmatch(word):
            number = float(word)
            # Issue 5 (fuzzing): 1e999 is inf and 10**5000 overflows every SQL integer type.
            if not math.isfinite(number) or abs(number) >= 2**63:
                raise self.error(f"The number {word[:40]!r} is out of range.")
            return int(word) if number.is_integer() and not any(c in word for c in ".eE") else number
        if lowered in ("and", "or", "not"):
            raise self.error(f"Expected a value but found the keyword {word!r}.")
        return word  # Entra's SDK-era unquoted values (``externalId eq jyoung``).

    def done(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise self.error(f"Unexpected {tok[1][:100]!r} after the end of the expression.")


def parse_filter(text: str, *, max_terms: int = MAX_FILTER_TERMS) -> Filter:
    """Parse a filter expression of at most ``max_terms`` comparisons; any error is ``InvalidFilter``."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidFilter("The filter is empty.")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    parser = _Parser(text, InvalidFilter, max_terms)
    node = parser.parse_or()
    parser.done()
    return node


def parse_patch_path(text: str) -> PatchPath:
    """Parse a PATCH ``path``; any error is ``InvalidPath``."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidPath("The path is empty.")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidPath(f"The path is longer than {MAX_FILTER_LENGTH} characters.")
    parser = _Parser(text, InvalidPath, MAX_FILTER_TERMS)
    kind, word = parser.next()
    if kind != "word":
        raise InvalidPath(f"{text[:200]!r} is not a valid path.")
    attr = parse_attr_path(word, InvalidPath)
    if parser.peek() is None:
        return PatchPath(attr)
    if attr.sub:
        raise InvalidPath(f"A value filter cannot follow a sub-attribute in {text[:200]!r}.")
    parser.expect("[")
    inner = parser.parse_or()
    parser.expect("]")
    sub = None
    tok = parser.peek()
    if tok is not None:
        if tok[0] != "word" or not tok[1].startswith("."):
            raise InvalidPath(f"Unexpected {tok[1][:100]!r} in path {text[:200]!r}.")
        parser.pos += 1
        sub_path = parse_attr_path(tok[1][1:], InvalidPath)
        if sub_path.uri or sub_path.sub:
            raise InvalidPath(f"{tok[1][:100]!r} is not a sub-attribute.")
        sub = sub_path.name
    parser.done()
    return PatchPath(attr, inner, sub)


def _quote(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _left_spine(node: And | Or) -> list[Filter]:
    """``[a, b, c]`` of ``((a op b) op c)``: the chain the parser builds from ``a op b op c``."""
    rights: list[Filter] = []
    current: Filter = node
    while isinstance(current, type(node)):
        rights.append(current.right)
        current = current.left
    return [current, *reversed(rights)]


def to_text(node: Filter) -> str:
    """Render a filter back to text that parses to the same tree."""
    if isinstance(node, Compare):
        return f"{node.path.text} {node.op} {_quote(node.value)}"
    if isinstance(node, Present):
        return f"{node.path.text} pr"
    if isinstance(node, (And, Or)):
        joiner = " and " if isinstance(node, And) else " or "
        return "(" + joiner.join(to_text(n) for n in _left_spine(node)) + ")"
    if isinstance(node, Not):
        return f"not ({to_text(node.inner)})"
    return f"{node.path.text}[{to_text(node.filter)}]"
