"""Hypothesis against the parsers a client reaches first (issue 5): the filter parser, the
PATCH engine, resource validation and Entra's normaliser. Whatever the input, the answer is
a result or a ``ScimError`` (a 4xx) — never another exception, which would be a 500.

The bounded runs here are part of ``make test``; ``make soak`` runs the same properties
with ten times the examples (``-m slow``).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.scim.errors import ScimError
from libs.scim.filter import parse_filter, to_text
from libs.scim.patch import apply_patch, parse_patch_request
from libs.scim.schemas import GROUPS, USERS
from libs.scim.validate import validate_resource

PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

ATTRIBUTES = ["userName", "name.givenName", "name.familyName", "displayName", "active", "emails", "emails.value",
              "emails[type eq \"work\"].value", "phoneNumbers[primary eq true]", "members", "members.value",
              f"{ENTERPRISE}:manager", f"{ENTERPRISE}:employeeNumber", "externalId", "id", "meta.created",
              "roles", "addresses[type eq \"work\"].streetAddress", "title", "groups", "x", "urn:bogus:a"]
OPERATORS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "and", "or", "not", "EQ", "Eq"]
NASTY = ['"', "'", "\\", "\u0000", "\u202e", "(", ")", "[", "]", " ", "--", ";", "/*", "*/", "%", "_",
         "' OR 1=1 --", "\"; DROP TABLE resources; --", "UNION SELECT", "\ud7ff", "\U0001f600", "\n", "\t"]

json_scalars = st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=True) | st.text(max_size=30)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(ATTRIBUTES + ["value", "type", "primary", "op", "path"])
                                             | st.text(max_size=10), inner, max_size=4), max_leaves=12)

filter_words = st.sampled_from(ATTRIBUTES + OPERATORS + NASTY + ['"bjensen"', "true", "false", "null", "42", "1e999"])
filter_texts = st.lists(filter_words, min_size=1, max_size=14).map(" ".join) | st.text(max_size=200)


def _bounded(examples: int):
    # make test's runs are derandomized (reproducible in CI); the soak's long runs explore.
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck),
                    derandomize=examples < 5000)


def _filter_property(text: str) -> None:
    try:
        node = parse_filter(text)
    except ScimError as exc:
        assert 400 <= exc.status < 500
        return
    assert parse_filter(to_text(node)) == node  # what we accept, we can print and read back


def _patch_property(operations: list, on_group: bool) -> None:
    schema = GROUPS if on_group else USERS
    resource = validate_resource({"displayName": "Guides"} if on_group else
                                 {"userName": "bjensen", "emails": [{"value": "b@x.org", "type": "work"}]}, schema)
    try:
        ops = parse_patch_request({"schemas": [PATCH_OP], "Operations": operations})
        result = apply_patch(resource, ops, schema, load_members=lambda: [{"value": "m1"}])
    except ScimError as exc:
        assert 400 <= exc.status < 500
        return
    validate_resource({k: v for k, v in result.resource.items() if k not in ("id", "meta")}, schema)


def _resource_property(body, on_group: bool) -> None:
    try:
        validate_resource(body, GROUPS if on_group else USERS)
    except ScimError as exc:
        assert 400 <= exc.status < 500


operations = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "Add", "Replace", "Remove", "copy", ""])},
    optional={"path": st.sampled_from(ATTRIBUTES) | filter_texts, "value": json_values}), max_size=4)
resources = st.dictionaries(st.sampled_from(ATTRIBUTES + ["schemas", "userName", "displayName"]) | st.text(max_size=8),
                            json_values, max_size=6)


@given(filter_texts)
@_bounded(800)
def test_any_filter_text_parses_or_is_a_scim_error(text):
    _filter_property(text)


@given(operations, st.booleans())
@_bounded(250)
def test_any_patch_request_applies_or_is_a_scim_error(ops, on_group):
    _patch_property(ops, on_group)


@given(resources, st.booleans())
@_bounded(150)
def test_any_resource_body_validates_or_is_a_scim_error(body, on_group):
    _resource_property(body, on_group)


@pytest.mark.slow
@given(filter_texts)
@_bounded(15000)
def test_any_filter_text_parses_or_is_a_scim_error_long_run(text):
    _filter_property(text)


@pytest.mark.slow
@given(operations, st.booleans())
@_bounded(8000)
def test_any_patch_request_applies_or_is_a_scim_error_long_run(ops, on_group):
    _patch_property(ops, on_group)


@pytest.mark.slow
@given(resources, st.booleans())
@_bounded(8000)
def test_any_resource_body_validates_or_is_a_scim_error_long_run(body, on_group):
    _resource_property(body, on_group)


@pytest.mark.parametrize("text", [
    "userName eq 'bjensen'", "userName eq \"bjensen", "userName eq bjensen\"",
    "userName eq \"a\" ; DROP TABLE resources", "userName eq \"a\" -- comment", "userName eq \"a\") or (1 eq 1",
    "userName eq \u0000", "\u0000", "userName\u0000 eq \"a\"", "(" * 200 + "userName pr" + ")" * 200,
    "not(" * 100 + "userName pr" + ")" * 100, "userName eq \"" + "a" * 10_000_000 + "\"",
    "userName eq 1e99999",
    "meta.created gt 1e999", "userName eq 99999999999999999999999", "userName eq -" + "9" * 5000,
])
def test_malicious_filters_are_invalid_filter_errors(text):
    with pytest.raises(ScimError) as caught:
        parse_filter(text)
    assert caught.value.status == 400


def test_an_escaped_quote_keeps_an_injection_inside_the_compared_string():
    node = parse_filter('userName eq "x\\" or 1 eq 1"')
    assert node.value == 'x" or 1 eq 1'
