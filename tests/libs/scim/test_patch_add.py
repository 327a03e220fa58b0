"""PATCH ``add`` (RFC 7644 §3.5.2.1) and parsing of PatchOp bodies."""

from __future__ import annotations

import copy

import pytest

from libs.scim.errors import InvalidPath, InvalidSyntax, InvalidValue, Mutability, NoTarget, PayloadTooLarge
from libs.scim.patch import PatchOperation, apply_patch, parse_patch_request
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, PATCH_OP, USER, USERS
from tests.libs.scim.helpers import BABS, ops, patch, sample


def test_rfc7644_add_members_sample_becomes_member_changes_not_document_changes(group):
    result = patch(group, sample("rfc7644-3.5.2.1-patch-add_members"), GROUPS)
    assert result.resource == group
    assert result.changed is False  # members live in their own table
    assert result.members.add == [{"value": BABS}]
    assert result.members.remove == set() and result.members.remove_all is False


def test_rfc7644_pathless_add_sample_appends_an_email_and_sets_the_nickname(plain_user):
    result = patch(plain_user, sample("rfc7644-3.5.2.1-patch-add_pathless"))
    assert result.resource["emails"] == [{"value": "babs@jensen.org", "type": "home"}]
    assert result.resource["nickName"] == "Babs"


def test_add_to_a_multi_valued_attribute_appends_and_skips_exact_duplicates(babs):
    result = patch(
        babs,
        ops(
            {
                "op": "add",
                "path": "emails",
                "value": [
                    {"value": "babs@jensen.org", "type": "home"},
                    {"value": "b@new.example", "type": "other"},
                ],
            }
        ),
    )
    assert result.resource["emails"] == babs["emails"] + [{"value": "b@new.example", "type": "other"}]


def test_add_of_a_value_already_present_changes_nothing(babs):
    result = patch(
        babs,
        ops(
            {"op": "add", "path": "emails", "value": [{"value": "babs@jensen.org", "type": "home"}]},
            {"op": "add", "path": "nickName", "value": "Babs"},
        ),
    )
    assert result.changed is False
    assert result.resource == babs


def test_add_of_a_single_object_to_a_multi_valued_attribute_is_an_array_of_one(plain_user):
    result = patch(plain_user, ops({"op": "add", "path": "emails", "value": {"value": "a@b"}}))
    assert result.resource["emails"] == [{"value": "a@b"}]


def test_add_of_a_new_primary_value_demotes_the_old_primary(babs):
    result = patch(babs, ops({"op": "add", "path": "emails", "value": [{"value": "new@x", "primary": True}]}))
    assert [e.get("primary") for e in result.resource["emails"]] == [False, None, True]


def test_add_to_a_complex_attribute_merges_sub_attributes(babs):
    result = patch(
        babs, ops({"op": "add", "path": "name", "value": {"givenName": "Barb", "nickname": "ignored"}})
    )
    assert result.resource["name"] == {**babs["name"], "givenName": "Barb"}


def test_add_to_a_single_valued_attribute_replaces_it(babs):
    result = patch(babs, ops({"op": "add", "path": "title", "value": "Lead Guide"}))
    assert result.resource["title"] == "Lead Guide"


def test_add_of_an_enterprise_attribute_creates_the_extension(plain_user):
    result = patch(plain_user, ops({"op": "add", "path": f"{ENTERPRISE_USER}:costCenter", "value": "4130"}))
    assert result.resource[ENTERPRISE_USER] == {"costCenter": "4130"}
    assert result.resource["schemas"] == [USER, ENTERPRISE_USER]


def test_add_with_a_bare_extension_urn_path_and_an_object_value(plain_user):
    result = patch(
        plain_user,
        ops(
            {
                "op": "add",
                "path": ENTERPRISE_USER,
                "value": {"division": "Theme Park", "manager": {"value": "m"}, "unknown": 1},
            }
        ),
    )
    assert result.resource[ENTERPRISE_USER] == {"division": "Theme Park", "manager": {"value": "m"}}


def test_add_on_a_filtered_path_sets_the_sub_attribute_of_matching_values(babs):
    result = patch(babs, ops({"op": "add", "path": 'phoneNumbers[type eq "work"].display', "value": "desk"}))
    assert result.resource["phoneNumbers"][0] == {"value": "555-555-5555", "type": "work", "display": "desk"}


def test_add_on_a_filtered_path_without_sub_attribute_merges_into_matching_values(babs):
    result = patch(babs, ops({"op": "add", "path": 'emails[type eq "home"]', "value": {"display": "Home"}}))
    assert result.resource["emails"][1] == {"value": "babs@jensen.org", "type": "home", "display": "Home"}


def test_add_on_a_non_eq_filter_that_matches_nothing_is_no_target(babs):
    with pytest.raises(NoTarget):
        patch(babs, ops({"op": "add", "path": 'emails[value co "nowhere"].display', "value": "x"}))


def test_add_of_null_clears_a_single_valued_attribute_and_ignores_a_multi_valued_one(babs):
    result = patch(
        babs, ops({"op": "add", "path": "title", "value": None}, {"op": "add", "path": "emails", "value": []})
    )
    assert "title" not in result.resource
    assert result.resource["emails"] == babs["emails"]


def test_add_with_the_wrong_type_is_invalid_value_naming_the_attribute(plain_user):
    with pytest.raises(InvalidValue, match="nickName"):
        patch(plain_user, ops({"op": "add", "path": "nickName", "value": 42}))
    with pytest.raises(InvalidValue, match="emails"):
        patch(plain_user, ops({"op": "add", "path": "emails", "value": "a@b"}))


def test_add_to_a_read_only_attribute_is_a_mutability_error(plain_user):
    for path in ("id", "meta.lastModified", "groups", f"{ENTERPRISE_USER}:manager.displayName"):
        with pytest.raises(Mutability):
            patch(plain_user, ops({"op": "add", "path": path, "value": "x"}))


def test_add_to_a_path_no_attribute_can_take_is_an_invalid_path(plain_user):
    for path in (USER, 'userName[value eq "x"]'):  # the core schema itself; a filter on a simple attribute
        with pytest.raises(InvalidPath):
            patch(plain_user, ops({"op": "add", "path": path, "value": "x"}))


def test_pathless_add_ignores_unknown_and_read_only_keys(plain_user):
    result = patch(
        plain_user,
        ops(
            {
                "op": "add",
                "value": {
                    "schemas": [USER],
                    "id": "x",
                    "meta": {},
                    "groups": [],
                    "favouriteColour": "blue",
                    "bad path[": 1,
                    "title": "T",
                },
            }
        ),
    )
    assert result.resource == {**plain_user, "title": "T"}


def test_apply_patch_passes_id_and_meta_through_untouched(plain_user):
    stored = {"id": "42", "meta": {"version": 'W/"1"'}, **plain_user}
    result = patch(stored, ops({"op": "add", "path": "title", "value": "T"}))
    assert result.resource["id"] == "42" and result.resource["meta"] == {"version": 'W/"1"'}


def test_apply_patch_never_mutates_the_resource_or_the_operations(babs):
    before = copy.deepcopy(babs)
    operations = parse_patch_request(sample("rfc7644-3.5.2.3-patch-replace_pathless"))
    ops_before = copy.deepcopy(operations)
    patch_result = apply_patch(babs, operations, USERS)
    patch_result.resource["emails"].append({"value": "x"})
    assert babs == before
    assert operations == ops_before


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], "x", None, 3])
def test_a_patch_body_that_is_not_an_object_is_invalid_syntax(body):
    with pytest.raises(InvalidSyntax):
        parse_patch_request(body)


@pytest.mark.parametrize(
    "body",
    [
        {"schemas": [PATCH_OP]},
        {"schemas": [PATCH_OP], "Operations": []},
        {"schemas": [PATCH_OP], "Operations": {"op": "add"}},
        {"schemas": [USER], "Operations": [{"op": "add", "path": "title", "value": "x"}]},
        {"schemas": PATCH_OP, "Operations": [{"op": "add", "path": "title", "value": "x"}]},
        {"schemas": [PATCH_OP], "Operations": ["add"]},
    ],
)
def test_missing_operations_or_a_wrong_schema_is_invalid_syntax(body):
    with pytest.raises(InvalidSyntax):
        parse_patch_request(body)


def test_a_body_without_schemas_and_with_lower_case_operations_key_is_accepted():
    parsed = parse_patch_request({"operations": [{"OP": "ADD", "Path": "title", "Value": "x"}]})
    assert parsed[0].op == "add" and parsed[0].value == "x" and parsed[0].path_text == "title"


@pytest.mark.parametrize("op", ["copy", "move", "test", "", None, 1])
def test_an_unknown_op_is_invalid_syntax(op):
    with pytest.raises(InvalidSyntax, match="op"):
        parse_patch_request(ops({"op": op, "path": "title", "value": "x"}))


@pytest.mark.parametrize("path", ["", "emails[type eq", 'emails[type eq "work"]]', "name..x", 7, "a b"])
def test_a_malformed_path_is_invalid_path(path):
    with pytest.raises(InvalidPath):
        parse_patch_request(ops({"op": "add", "path": path, "value": "x"}))


def test_add_without_a_value_is_invalid_value():
    with pytest.raises(InvalidValue):
        parse_patch_request(ops({"op": "add", "path": "title"}))


def test_pathless_add_needs_an_object_value():
    with pytest.raises(InvalidValue):
        parse_patch_request(ops({"op": "add", "value": ["x"]}))


def test_remove_without_a_path_is_no_target():
    with pytest.raises(NoTarget):
        parse_patch_request(ops({"op": "remove"}))


def test_more_operations_than_the_cap_is_payload_too_large():
    body = ops(*[{"op": "add", "path": "title", "value": str(i)} for i in range(11)])
    assert len(parse_patch_request(body, max_operations=11)) == 11
    with pytest.raises(PayloadTooLarge):
        parse_patch_request(body, max_operations=10)


def test_parsed_operations_carry_the_parsed_path():
    parsed = parse_patch_request(ops({"op": "Add", "path": 'emails[type eq "work"].value', "value": "x"}))
    assert isinstance(parsed[0], PatchOperation)
    assert parsed[0].path.attr.name == "emails" and parsed[0].path.sub == "value"
