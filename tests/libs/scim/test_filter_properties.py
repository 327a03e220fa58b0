"""Property: a filter tree rendered to text parses back to the same tree (RFC 7644 §3.4.2.2).

Trees are drawn over every operator and grouping (and, or, not, value paths) with
arbitrary strings (quotes, backslashes, brackets, non-ASCII, keywords), integers,
decimals, booleans, null, sub-attributes and extension URNs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from libs.scim.filter import And, AttrPath, Compare, Not, Or, Present, ValuePath, parse_filter, to_text

NAMES = st.sampled_from(["userName", "title", "emails", "meta", "active", "x509Certificates", "$ref", "a-b_c"])
SUBS = st.one_of(st.none(), st.sampled_from(["value", "type", "primary", "lastModified", "givenName"]))
URNS = st.one_of(st.none(), st.sampled_from(["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
                                             "urn:ietf:params:scim:schemas:extension:acme:2.0:User"]))
PATHS = st.builds(AttrPath, URNS, NAMES, SUBS)
OPS = st.sampled_from(["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"])
VALUES = st.one_of(
    # Any string a stored value can hold: U+0000 and lone surrogates are refused (test_filter_limits.py).
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
    st.sampled_from(['"', "\\", "and", "or", "not", "pr", ")", "[x]", "é𝄞", "2011-05-13T04:42:34Z"]),
    st.integers(-10**12, 10**12),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f) if abs(f) < 1e15 else False),
    st.booleans(), st.none(),
)
LEAVES = st.one_of(st.builds(Compare, PATHS, OPS, VALUES), st.builds(Present, PATHS))
ELEMENT_LEAVES = st.one_of(st.builds(Compare, st.builds(AttrPath, st.none(), NAMES), OPS, VALUES),
                           st.builds(Present, st.builds(AttrPath, st.none(), NAMES)))


def combine(children):
    return st.one_of(st.builds(And, children, children), st.builds(Or, children, children),
                     st.builds(Not, children))


ELEMENT_FILTERS = st.recursive(ELEMENT_LEAVES, combine, max_leaves=4)
FILTERS = st.recursive(
    st.one_of(LEAVES, st.builds(ValuePath, st.builds(AttrPath, URNS, NAMES), ELEMENT_FILTERS)),
    combine, max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(FILTERS)
def test_a_rendered_filter_parses_to_the_same_tree(tree):
    assert parse_filter(to_text(tree)) == tree


@settings(max_examples=200, deadline=None)
@given(FILTERS)
def test_rendering_is_stable(tree):
    text = to_text(tree)
    assert to_text(parse_filter(text)) == text
