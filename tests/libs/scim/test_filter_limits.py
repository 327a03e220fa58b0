"""What one filter may cost (issue 16, medium 5): a cap on its comparisons, a cap on its
nesting, and walks over a chain of terms that loop instead of recursing per term, in the
parser, the evaluator and the SQL translation alike."""

from __future__ import annotations

from functools import reduce

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from libs.scim.errors import InvalidFilter, InvalidPath
from libs.scim.evaluate import matches
from libs.scim.filter import MAX_DEPTH, Or, operands, parse_filter, parse_patch_path, to_text
from libs.scim.schemas import USERS
from libs.store.query import filter_clause

USER = {"userName": "bjensen", "title": "Tour Guide", "emails": [{"type": "work", "value": "b@example.com"}]}


def _compiles(node) -> None:
    clause = filter_clause(node, USERS)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        clause.compile(dialect=dialect)


def test_a_filter_over_the_term_limit_is_invalid_filter_naming_the_limit():
    with pytest.raises(InvalidFilter, match="more than 200 comparisons"):
        parse_filter(" or ".join(["id pr"] * 201))
    with pytest.raises(InvalidFilter, match="more than 3 comparisons"):
        parse_filter('title pr and (userName pr or emails[type eq "work" and value pr])', max_terms=3)
    assert len(operands(parse_filter(" or ".join(["id pr"] * 200)), Or)) == 200


def test_a_patch_path_over_the_term_limit_is_invalid_path():
    with pytest.raises(InvalidPath, match="more than 200 comparisons"):
        parse_patch_path("members[" + " or ".join(['value eq "x"'] * 201) + "]")


def test_a_chain_of_1100_terms_translates_and_evaluates_without_recursing_per_term():
    # The review's 1,100 terms, built without the parser (which now refuses them): a
    # RecursionError in the SQL translation made the reader answer 500.
    title = parse_filter("title pr")
    chain = reduce(Or, [title] * 1100)
    _compiles(chain)
    assert matches(chain, USER, USERS)
    assert to_text(chain).count(" or ") == 1099
    right_deep = reduce(lambda inner, outer: Or(outer, inner), [title] * 1100)
    _compiles(right_deep)
    assert matches(right_deep, USER, USERS)


def test_a_value_filter_of_many_terms_translates_and_evaluates():
    node = parse_filter("emails[" + " or ".join(['type eq "home"'] * 150 + ['type eq "work"']) + "]")
    _compiles(node)
    assert matches(node, USER, USERS)


@pytest.mark.parametrize("wrap", [
    lambda inner: f"({inner})",
    lambda inner: f"not ({inner})",
    lambda inner: f"(title pr and not ({inner}) or userName pr)",
], ids=["parentheses", "not", "mixed"])
def test_the_deepest_nesting_the_parser_allows_translates_and_one_more_is_invalid(wrap):
    text = "title pr"
    depth = 1
    while True:
        wrapped = wrap(text)
        try:
            node = parse_filter(wrapped)
        except InvalidFilter as exc:
            assert f"deeper than {MAX_DEPTH} levels" in str(exc)
            break
        text, depth = wrapped, depth + 1
    assert depth > MAX_DEPTH // 3
    node = parse_filter(text)
    _compiles(node)
    matches(node, USER, USERS)


def test_value_paths_count_toward_the_nesting_limit():
    nested = "emails[" + "not (" * (MAX_DEPTH - 2) + 'type eq "work"' + ")" * (MAX_DEPTH - 2) + "]"
    _compiles(parse_filter(nested))
    with pytest.raises(InvalidFilter, match="deeper than"):
        parse_filter("emails[" + "not (" * MAX_DEPTH + 'type eq "work"' + ")" * MAX_DEPTH + "]")
    with pytest.raises(InvalidFilter, match="nested"):
        _compiles(parse_filter('emails[type[value eq "x"]]'))


# --- values no stored string holds (the hostile sweep of 2026-12-05) -----------------------

@pytest.mark.parametrize("escape", ["\\u0000", "a\\u0000", "\\ud800", "\\udfff", "x\\udc00y"])
def test_a_quoted_value_that_decodes_to_nul_or_a_lone_surrogate_is_an_invalid_filter(escape):
    # Before: the reader sent it to PostgreSQL and answered 500 (psycopg cannot encode a lone
    # surrogate; PostgreSQL refuses NUL in text).
    with pytest.raises(InvalidFilter, match="U\\+0000 or a lone surrogate"):
        parse_filter(f'userName eq "{escape}"')


@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800"])
def test_a_patch_path_whose_value_filter_decodes_to_nul_or_a_lone_surrogate_is_an_invalid_path(escape):
    # Before: the worker stored it, PostgreSQL refused the batch, and RQ retried it for ~10 s.
    with pytest.raises(InvalidPath, match="U\\+0000 or a lone surrogate"):
        parse_patch_path(f'emails[type eq "{escape}"].value')


def test_a_surrogate_pair_escape_is_the_character_it_encodes():
    assert parse_filter('displayName eq "\\ud83d\\ude00"').value == "\U0001F600"
