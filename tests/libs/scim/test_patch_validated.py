"""``apply_patch(..., validated=True)``: the worker's stored documents are not validated again,
and the result is the one the full validation gives."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.scim.errors import InvalidSyntax, InvalidValue, Mutability, ScimError
from libs.scim.patch import parse_patch_request
from libs.scim.schemas import GROUPS, USERS
from libs.scim.validate import validate_changes, validate_resource
from tests.libs.scim.helpers import ops, patch, sample

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

ENTRA_USER = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE],
    "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", "userName": "Test_User_ab6490ee@contoso.com",
    "active": True, "emails": [{"primary": True, "type": "work", "value": "Test_User_ab6490ee@contoso.com"}],
    "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"}, "roles": [],
    ENTERPRISE: {"employeeNumber": "1234567", "department": "Sales"},
}
PATCHES = [
    ops({"op": "Replace", "path": "name.familyName", "value": "Other"}),
    ops({"op": "Add", "path": f"{ENTERPRISE}:manager", "value": "26118915-6090-4610-87e4-49d8ca9f808d"}),
    ops({"op": "Replace", "path": "active", "value": "False"}),
    ops({"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "new@contoso.com"}),
    ops({"op": "Remove", "path": "name.givenName"}, {"op": "Add", "value": {"displayName": "Ryan L"}}),
    ops({"op": "Replace", "path": "active", "value": True}),  # no change
]


@pytest.mark.parametrize("body", PATCHES, ids=range(len(PATCHES)))
@pytest.mark.parametrize("document", [ENTRA_USER, sample("rfc7643-8.3-enterprise_user")], ids=["entra", "rfc-full"])
def test_a_stored_document_patched_without_revalidation_gives_the_same_result(document, body):
    stored = validate_resource(document, USERS)
    assert validate_resource(stored, USERS) == stored  # what skipping the validation relies on
    again = patch(stored, body)
    trusted = patch(stored, body, validated=True)
    assert (trusted.resource, trusted.changed, trusted.members) == (again.resource, again.changed, again.members)
    assert stored == validate_resource(document, USERS)  # the stored document is left as it was


def test_a_group_patched_without_revalidation_gives_the_same_member_changes():
    stored = validate_resource({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                "displayName": "Sales"}, GROUPS)
    body = ops({"op": "Add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
               {"op": "Replace", "path": "displayName", "value": "Sales EU"})
    again, trusted = patch(stored, body, GROUPS), patch(stored, body, GROUPS, validated=True)
    assert (trusted.resource, trusted.changed) == (again.resource, again.changed)
    assert [m["value"] for m in trusted.members.add] == ["a", "b"]


# -- copy-on-write: the stored document is never modified ------------------------------------------

# Each list's last operation fails after the first ones succeeded, each first one writing
# where a deep copy used to protect the stored document: an element demoted from primary, an
# extension's object, a complex attribute, a whole element list.
FAILING_AFTER_CHANGES = [
    [{"op": "Add", "path": "emails", "value": [{"value": "new@contoso.com", "primary": True}]},
     {"op": "Replace", "path": "active", "value": "maybe"}],
    [{"op": "Add", "path": f"{ENTERPRISE}:manager", "value": "26118915"},
     {"op": "Replace", "path": f"{ENTERPRISE}:department", "value": "Ops"},
     {"op": "Remove", "path": "userName"}],
    [{"op": "Replace", "path": "name.familyName", "value": "Other"},
     {"op": "Replace", "path": "emails[type eq \"work\"].primary", "value": False},
     {"op": "Replace", "path": "id", "value": "x"}],
    [{"op": "Remove", "path": f"{ENTERPRISE}:employeeNumber"},
     {"op": "Replace", "path": "emails[type eq \"work\"]", "value": {"value": "w@contoso.com", "primary": True}},
     {"op": "Add", "path": "phoneNumbers[type eq \"mobile\" or type eq \"work\"].value", "value": "1"}],
    [{"op": "Add", "value": {"name": {"givenName": "R"}, f"{ENTERPRISE}:costCenter": "7"}},
     {"op": "Replace", "path": "emails", "value": [{"value": "a@b", "primary": True},
                                                  {"value": "c@d", "primary": True}]}],
]


@pytest.mark.parametrize("validated", [True, False], ids=["validated", "unvalidated"])
@pytest.mark.parametrize("operations", FAILING_AFTER_CHANGES, ids=range(len(FAILING_AFTER_CHANGES)))
def test_an_operation_list_failing_after_a_change_leaves_the_stored_document_as_it_was(operations, validated):
    stored = validate_resource(ENTRA_USER, USERS)
    before = copy.deepcopy(stored)
    pieces = {k: v for k, v in stored.items()}  # the nested objects themselves, not copies
    with pytest.raises(ScimError) as failed:
        patch(stored, ops(*operations), validated=validated)
    assert 400 <= failed.value.status < 500
    assert stored == before
    assert all(stored[k] is v for k, v in pieces.items())
    assert patch(stored, ops(*operations[:-1]), validated=validated).changed  # the first ones did change it


def test_a_successful_patch_leaves_the_stored_document_as_it_was_and_shares_what_it_kept():
    stored = validate_resource(ENTRA_USER, USERS)
    before = copy.deepcopy(stored)
    result = patch(stored, ops({"op": "Add", "path": "emails", "value": [{"value": "n@contoso.com", "primary": True}]},
                               {"op": "Replace", "path": f"{ENTERPRISE}:department", "value": "Ops"}), validated=True)
    assert stored == before
    assert result.resource["emails"] == [{"primary": False, "type": "work", "value": before["emails"][0]["value"]},
                                         {"value": "n@contoso.com", "primary": True}]
    assert result.resource["name"] is stored["name"]  # untouched: neither copied nor validated again
    assert result.resource[ENTERPRISE]["employeeNumber"] == "1234567"


# -- the 400 of a rule broken on a changed attribute ------------------------------------------------

# (operations, error class, detail): the answers main gave before PATCH validated only what changed.
RULES_BROKEN = [
    ([{"op": "Replace", "path": "active", "value": "maybe"}], InvalidValue, "'active' must be a boolean, not a string."),
    ([{"op": "Replace", "path": "userName", "value": ""}], Mutability,
     "userName is required and cannot be removed (RFC 7644 §3.5.2.2)."),
    ([{"op": "Remove", "path": "userName"}], Mutability,
     "userName is required and cannot be removed (RFC 7644 §3.5.2.2)."),
    ([{"op": "Replace", "path": "displayName", "value": "x" * 2049}], InvalidValue,
     "'displayName' is longer than 2048 characters."),
    ([{"op": "Add", "path": "emails", "value": [{"value": "a@b", "primary": True}, {"value": "c@d", "primary": True}]}],
     InvalidValue, "At most one value of 'emails' may be primary (RFC 7643 §2.4)."),
    ([{"op": "Add", "path": "emails", "value": [{"value": "a@b"}]},
      {"op": "Replace", "path": "emails.primary", "value": True}], InvalidValue,
     "'emails.primary': only one value may be primary."),
    ([{"op": "Replace", "path": "name", "value": "Ryan"}], InvalidValue, "'name' needs an object of sub-attributes."),
    ([{"op": "Replace", "path": "emails", "value": "a@b"}], InvalidValue,
     "'emails' is multi-valued: send a JSON array."),
    ([{"op": "Add", "path": f"{ENTERPRISE}:manager", "value": 42}], InvalidValue,
     f"'{ENTERPRISE}:manager' needs an object of sub-attributes."),
    ([{"op": "Replace", "path": ENTERPRISE, "value": "Sales"}], InvalidValue,
     f"'{ENTERPRISE}' needs an object of that extension's attributes."),
    ([{"op": "Replace", "path": "meta.created", "value": "2020-01-01T00:00:00Z"}], Mutability, "'meta.created' is read-only."),
]


@pytest.mark.parametrize(("operations", "error", "detail"), RULES_BROKEN, ids=range(len(RULES_BROKEN)))
def test_a_patch_breaking_a_rule_on_an_attribute_it_changes_gets_the_same_400(operations, error, detail):
    stored = validate_resource(ENTRA_USER, USERS)
    answers = []
    for validated in (False, True):
        with pytest.raises(error) as failed:
            patch(stored, ops(*operations), validated=validated)
        answers.append(failed.value.to_body())
    assert answers[0] == answers[1]
    assert answers[1]["status"] == "400" and answers[1]["detail"] == detail


def test_validate_changes_checks_a_replaced_value_with_the_rules_of_validate_resource():
    # The engine coerces what it sets; these bypass it to reach validate_changes' own checks.
    stored = validate_resource(ENTRA_USER, USERS)
    for changed, error in [({**stored, "active": "yes"}, InvalidValue), ({**stored, "userName": ""}, InvalidValue),
                           ({**stored, "emails": {"value": "a@b"}}, InvalidValue),
                           ({**stored, ENTERPRISE: "Sales"}, InvalidSyntax),
                           ({**stored, ENTERPRISE: {**stored[ENTERPRISE], "manager": 7}}, InvalidValue),
                           ({**stored, "schemas": "x"}, InvalidSyntax)]:
        with pytest.raises(error) as trusted:
            validate_changes(changed, stored, USERS)
        with pytest.raises(error) as full:
            validate_resource(changed, USERS)
        assert trusted.value.to_body() == full.value.to_body()
    renamed = {k: v for k, v in stored.items() if k != ENTERPRISE}
    renamed["department"] = "Ops"  # Entra's unqualified extension name (P10): renamed as validate_resource does
    assert validate_changes(renamed, stored, USERS) == validate_resource(renamed, USERS)


# -- property: validated=True answers what the full validation answers -----------------------------

PATHS = ["userName", "name", "name.givenName", "name.familyName", "displayName", "active", "title", "emails",
         "emails.value", "emails.primary", "emails[type eq \"work\"]", "emails[type eq \"work\"].value",
         "emails[type eq \"home\"].primary", "phoneNumbers[type eq \"mobile\"].value", "roles",
         "addresses[type eq \"work\"].streetAddress", ENTERPRISE, f"{ENTERPRISE}:manager",
         f"{ENTERPRISE}:manager.value", f"{ENTERPRISE}:employeeNumber", f"{ENTERPRISE}:department", "manager",
         "manager[value eq \"m1\"]", "externalId", "id", "x", "urn:bogus:a"]
scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "True", "False", "m1", "work", "a@b",
                                                                            "x" * 2049])
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.sampled_from(["value", "type", "primary", "givenName", "familyName", "manager", "department", "active",
                     "emails", f"{ENTERPRISE}:department", "name.givenName", "display", "x"]), inner, max_size=3),
    max_leaves=8)
objects = st.dictionaries(st.sampled_from(PATHS + ["schemas"]), values, min_size=1, max_size=3)
operation_lists = st.lists(
    st.fixed_dictionaries({"op": st.just("remove"), "path": st.sampled_from(PATHS)})
    | st.fixed_dictionaries({"op": st.sampled_from(["add", "replace"]), "path": st.sampled_from(PATHS),
                             "value": values})
    | st.fixed_dictionaries({"op": st.sampled_from(["add", "replace"]), "value": objects}),
    min_size=1, max_size=4)


def _outcome(stored, body, validated):
    try:
        result = patch(stored, body, validated=validated)
    except ScimError as exc:
        return exc.to_body()
    return json.dumps(result.resource), result.changed  # byte for byte, key order included


@given(operation_lists, st.sampled_from(["entra", "rfc-full"]))
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_any_patch_of_a_stored_document_answers_as_the_full_validation_does(operations, which):
    stored = validate_resource(ENTRA_USER if which == "entra" else sample("rfc7643-8.3-enterprise_user"), USERS)
    before = copy.deepcopy(stored)
    body = ops(*operations)
    try:
        parse_patch_request(body)
    except ScimError:
        return
    assert _outcome(stored, body, True) == _outcome(stored, body, False)
    assert stored == before
