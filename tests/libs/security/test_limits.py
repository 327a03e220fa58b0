"""Shape limits on request bodies and filters (issue 5)."""

from __future__ import annotations

import pytest

from libs.config import load_settings
from libs.scim.errors import InvalidFilter, InvalidSyntax, InvalidValue, PayloadTooLarge
from libs.security.limits import check_filter, check_json, count_members

SETTINGS = load_settings({}, max_json_depth=5, max_array_items=3, max_members=2, max_filter_length=20)


def _nested(depth: int):
    doc: object = "leaf"
    for _ in range(depth):
        doc = {"a": doc}
    return doc


def test_a_body_at_the_depth_limit_passes_and_one_deeper_is_invalid_syntax():
    check_json(_nested(5), SETTINGS)
    with pytest.raises(InvalidSyntax):
        check_json(_nested(6), SETTINGS)


def test_a_very_deep_body_does_not_exhaust_the_stack():
    doc: list = []
    for _ in range(100_000):
        doc = [doc]
    with pytest.raises(InvalidSyntax):
        check_json(doc, load_settings({}))


def test_arrays_and_nul_characters():
    check_json({"emails": [1, 2, 3]}, SETTINGS)
    with pytest.raises(PayloadTooLarge):
        check_json({"emails": [1, 2, 3, 4]}, SETTINGS)
    with pytest.raises(InvalidValue):
        check_json({"userName": "a\x00"}, SETTINGS)
    with pytest.raises(InvalidValue):
        check_json({"a\x00": 1}, SETTINGS)


def test_members_are_counted_in_bodies_and_patch_requests():
    assert count_members({"members": [{"value": "a"}, {"value": "b"}]}, patch=False) == 2
    ops = {"Operations": [{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
                          {"op": "Add", "path": "Members", "value": {"value": "c"}},
                          {"op": "replace", "value": {"members": [{"value": "d"}]}},
                          {"op": "replace", "path": "displayName", "value": "x"}]}
    assert count_members(ops, patch=True) == 4
    for odd in ({"Operations": 5}, {"Operations": {"op": "add"}}, {"Operations": None}, [], "x"):
        assert count_members(odd, patch=True) == 0


def test_filters_over_the_length_or_with_nul_are_invalid():
    check_filter('userName eq "a"', SETTINGS)
    for text in ("x" * 21, 'userName eq "\x00"', 'userName eq "\\u0000"', 42):
        with pytest.raises(InvalidFilter):
            check_filter(text, SETTINGS)
