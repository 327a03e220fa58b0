"""Every PATCH shape Entra sends (entra-scim.md §5 P1–P17), in both dialects of §8.

"without flag" is Entra's default dialect; "with flag" is the one behind ``aadOptscim062020``.
Each sample under ``tests/samples/entra-*.json`` is a request body as Entra sends it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.scim import entra
from libs.scim.filter import Compare, PatchPath
from libs.scim.patch import MemberChanges, PatchResult, apply_patch, parse_patch_request
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, PATCH_OP, USER, USERS
from libs.scim.validate import validate_resource

SAMPLES = Path(__file__).parents[2] / "samples"
MANAGER_ID = "26118915-6090-4610-87e4-49d8ca9f808d"
MEMBER = "f648f8d5ea4e4cd38e9c"
OTHER_MEMBER = "a2b4c6d8e0f2a4b6c8d0"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def patch(resource: dict[str, Any], name: str, schema=USERS, **kw: Any) -> PatchResult:
    return apply_patch(resource, parse_patch_request(sample(name)), schema, **kw)


def no_loading() -> list[dict[str, Any]]:
    raise AssertionError("Entra's member shapes never need the member list")


@pytest.fixture
def entra_user() -> dict[str, Any]:
    """The user as Entra's tutorial creates it."""
    return validate_resource(sample("entra-create-user"), USERS)


@pytest.fixture
def babs() -> dict[str, Any]:
    return validate_resource(sample("rfc7643-8.3-enterprise_user"), USERS)


@pytest.fixture
def entra_group() -> dict[str, Any]:
    return validate_resource(sample("entra-create-group"), GROUPS)


# -- §6 / §8 "Disable user" ------------------------------------------------------------------------


def test_entra_disable_user_without_flag_sends_capitalised_replace_and_string_False(entra_user):
    result = patch(entra_user, "entra-disable-user-without-flag")
    assert result.resource["active"] is False and result.changed


def test_entra_disable_user_with_flag_sends_lower_case_replace_and_boolean_false(entra_user):
    assert patch(entra_user, "entra-disable-user-with-flag").resource["active"] is False


def test_entra_disable_user_tutorial_sample_lists_operations_before_schemas(entra_user):
    assert list(sample("entra-disable-user-tutorial")) == ["Operations", "schemas"]
    assert patch(entra_user, "entra-disable-user-tutorial").resource["active"] is False


def test_entra_restore_user_without_flag_sends_string_True(entra_user):
    disabled = patch(entra_user, "entra-disable-user-without-flag").resource
    body = {"schemas": [PATCH_OP], "Operations": [{"op": "Replace", "path": "active", "value": "True"}]}
    assert apply_patch(disabled, parse_patch_request(body), USERS).resource["active"] is True


# -- P1, P2: filtered email path and plain paths ---------------------------------------------------


def test_entra_P1_replace_work_email_value_and_family_name(entra_user):
    result = patch(entra_user, "entra-P1-replace-work-email-and-family-name")
    assert result.resource["emails"] == [
        {"primary": True, "type": "work", "value": "updatedEmail@microsoft.com"}
    ]
    assert result.resource["name"]["familyName"] == "updatedFamilyName"


def test_entra_P2_replace_user_name_without_flag(entra_user):
    result = patch(entra_user, "entra-P2-replace-username")
    assert result.resource["userName"] == "5b50642d-79fc-4410-9e90-4c077cdd1a59@testuser.com"


def test_entra_P2_replace_plain_paths_with_flag(babs):
    result = patch(babs, "entra-P2-replace-plain-paths-with-flag")
    assert (result.resource["displayName"], result.resource["externalId"], result.resource["active"]) == (
        "Babs J",
        "e-42",
        True,
    )


# -- P3, P4: enterprise URN paths and single-valued adds -------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["entra-P3-add-enterprise-attributes-without-flag", "entra-P3-add-enterprise-attributes-with-flag"],
)
def test_entra_P3_add_and_replace_enterprise_urn_paths(entra_user, name):
    result = patch(entra_user, name)
    assert result.resource[ENTERPRISE_USER] == {"employeeNumber": "701984", "department": "Tour Operations"}
    assert result.resource["schemas"] == [USER, ENTERPRISE_USER]


@pytest.mark.parametrize("name", ["entra-P4-add-nickname-without-flag", "entra-P4-add-nickname-with-flag"])
def test_entra_P4_add_single_valued_string_nickname(entra_user, name):
    assert patch(entra_user, name).resource["nickName"] == "Babs"


# -- P5: replacing several attributes ---------------------------------------------------------------


def test_entra_P5_without_flag_sends_one_replace_per_attribute(entra_user):
    result = patch(entra_user, "entra-P5-replace-several-without-flag")
    _assert_p5(result.resource)


def test_entra_P5_with_flag_sends_one_pathless_replace_with_dotted_and_urn_keys(entra_user):
    result = patch(entra_user, "entra-P5-replace-pathless-with-flag")
    _assert_p5(result.resource)
    assert result.resource == patch(entra_user, "entra-P5-replace-several-without-flag").resource


def _assert_p5(doc: dict[str, Any]) -> None:
    assert doc["emails"][0]["value"] == "updatedEmail@microsoft.com"
    assert doc["displayName"] == "Updated Name"
    assert doc["name"] == {"formatted": "givenName familyName", "givenName": "Updated", "familyName": "Name"}
    assert doc[ENTERPRISE_USER] == {"employeeNumber": "42"}


def test_entra_P5_pathless_value_may_carry_manager_and_filtered_keys(entra_user):
    body = {
        "schemas": [PATCH_OP],
        "Operations": [
            {
                "op": "replace",
                "value": {
                    f"{ENTERPRISE_USER}:manager": MANAGER_ID,
                    'emails[type eq "work"].value': "x@y",
                    "active": "False",
                },
            }
        ],
    }
    doc = apply_patch(entra_user, parse_patch_request(body), USERS).resource
    assert doc[ENTERPRISE_USER]["manager"] == {"value": MANAGER_ID}
    assert doc["emails"][0]["value"] == "x@y" and doc["active"] is False


# -- P6, P7: typed entries that do not exist yet, capitalised sub-attributes -------------------------


@pytest.mark.parametrize("name", ["entra-P6-add-typed-entries", "entra-P6-replace-typed-entries-with-flag"])
def test_entra_P6_type_filtered_path_creates_the_missing_typed_entry(entra_user, name):
    doc = patch(entra_user, name).resource
    assert doc["addresses"] == [{"type": "work", "formatted": "1 Microsoft Way\nRedmond, WA 98052"}]
    assert doc["phoneNumbers"] == [{"type": "mobile", "value": "+1 425 555 0100"}]


def test_entra_P6_type_filtered_path_updates_the_entry_once_it_exists(entra_user):
    created = patch(entra_user, "entra-P6-add-typed-entries").resource
    again = patch(created, "entra-P6-add-typed-entries")
    assert again.changed is False and len(again.resource["phoneNumbers"]) == 1


def test_entra_P7_capitalised_sub_attribute_names_are_stored_canonically(entra_user):
    doc = patch(entra_user, "entra-P7-capitalised-sub-attributes").resource
    assert {"type": "other", "value": "babs@other.example"} in doc["emails"]
    assert doc["addresses"] == [{"type": "other", "formatted": "somewhere else"}]


# -- P8, P9, P10: manager ------------------------------------------------------------------------


def test_entra_P8_add_manager_as_a_bare_id_string(entra_user):
    doc = patch(entra_user, "entra-P8-add-manager-bare-string").resource
    assert doc[ENTERPRISE_USER] == {"manager": {"value": MANAGER_ID}}


def test_entra_P8_sdk_era_add_manager_without_urn_as_an_array_of_one(entra_user):
    doc = patch(entra_user, "entra-P8-add-manager-sdk-array").resource
    assert doc[ENTERPRISE_USER] == {"manager": {"value": MANAGER_ID}}


def test_entra_P9_replace_manager_with_a_value_object(babs):
    doc = patch(babs, "entra-P9-replace-manager-object").resource
    assert doc[ENTERPRISE_USER]["manager"]["value"] == "902c246b-6245-4190-8e05-00816be7344a"


def test_entra_P9_clear_manager_with_an_empty_value(babs):
    doc = patch(babs, "entra-P9-clear-manager-empty-value").resource
    assert "manager" not in doc[ENTERPRISE_USER]


def test_entra_P10_remove_manager_by_filter_without_urn(babs):
    doc = patch(babs, "entra-P10-remove-manager-filter").resource
    assert "manager" not in doc[ENTERPRISE_USER]


def test_entra_P10_remove_of_a_different_manager_changes_nothing(babs):
    body = {
        "schemas": [PATCH_OP],
        "Operations": [{"op": "Remove", "path": 'manager[value eq "someone-else"]'}],
    }
    result = apply_patch(babs, parse_patch_request(body), USERS)
    assert result.changed is False


# -- P11: roles ----------------------------------------------------------------------------------


def test_entra_P11_add_roles_without_flag_keeps_the_json_string_value_as_sent(entra_user):
    body = sample("entra-P11-add-roles-json-string")
    doc = patch(entra_user, "entra-P11-add-roles-json-string").resource
    assert doc["roles"] == body["Operations"][0]["value"]


def test_entra_P11_add_roles_with_flag_keeps_the_role_object(entra_user):
    doc = patch(entra_user, "entra-P11-add-roles-with-flag").resource
    assert doc["roles"] == [
        {"primary": False, "type": "WindowsAzureActiveDirectoryRole", "display": "Admin", "value": "Admin"}
    ]


# -- P12–P15, P17: groups ----------------------------------------------------------------------------


def test_entra_P12_add_members_with_null_refs(entra_group):
    result = patch(entra_group, "entra-P12-add-members", GROUPS, load_members=no_loading)
    assert result.members == MemberChanges(add=[{"value": MEMBER}, {"value": OTHER_MEMBER}])
    assert result.resource == entra_group


def test_entra_P13_remove_member_without_flag_sends_a_value_array(entra_group):
    result = patch(entra_group, "entra-P13-remove-member-value-array", GROUPS, load_members=no_loading)
    assert result.members == MemberChanges(remove={MEMBER})


def test_entra_P13_value_array_without_refs_removes_each_listed_member(entra_group):
    result = patch(
        entra_group, "entra-P13-remove-member-value-array-without-ref", GROUPS, load_members=no_loading
    )
    assert result.members == MemberChanges(remove={MEMBER, OTHER_MEMBER})


def test_entra_P14_remove_member_with_flag_sends_a_value_filter(entra_group):
    result = patch(entra_group, "entra-P14-remove-member-filter-with-flag", GROUPS, load_members=no_loading)
    assert result.members == MemberChanges(remove={MEMBER})


def test_entra_P13_and_P14_remove_the_same_member(entra_group):
    legacy = patch(entra_group, "entra-P13-remove-member-value-array", GROUPS)
    flagged = patch(entra_group, "entra-P14-remove-member-filter-with-flag", GROUPS)
    assert legacy == flagged


def test_entra_P15_replace_group_display_name_without_flag(entra_group):
    result = patch(entra_group, "entra-P15-replace-group-display-name", GROUPS)
    assert result.resource["displayName"] == "1879db59-3bdf-4490-ad68-ab880a269474updatedDisplayName"
    assert result.members is None


def test_entra_P15_validator_pathless_replace_of_display_name_ignores_echoed_id(entra_group):
    result = patch(entra_group, "entra-P15-replace-group-pathless-with-flag", GROUPS)
    assert result.resource["displayName"] == "Tour Guides Renamed"
    assert "id" not in result.resource


def test_entra_P15_validator_replace_members_with_an_array(entra_group):
    result = patch(entra_group, "entra-P15-replace-members-validator", GROUPS, load_members=no_loading)
    assert result.members == MemberChanges(add=[{"value": MEMBER}], remove_all=True)


def test_entra_P17_re_adding_an_existing_member_succeeds(entra_group):
    first = patch(entra_group, "entra-P12-add-members", GROUPS)
    second = patch(first.resource, "entra-P12-add-members", GROUPS)
    assert second.members == first.members


# -- P16: clearing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["entra-P16-clear-with-empty-string", "entra-P16-clear-with-null"])
def test_entra_P16_gallery_clears_optional_attributes_with_empty_string_then_null(babs, name):
    doc = patch(babs, name).resource
    assert "title" not in doc and "department" not in doc[ENTERPRISE_USER]


def test_entra_P16_empty_string_then_null_in_sequence(babs):
    cleared = patch(patch(babs, "entra-P16-clear-with-empty-string").resource, "entra-P16-clear-with-null")
    assert cleared.changed is False


# -- the quirk functions themselves ------------------------------------------------------------------


def test_string_boolean_converts_only_true_and_false():
    assert entra.string_boolean("False") is False and entra.string_boolean("tRUE") is True
    assert entra.string_boolean("no") == "no" and entra.string_boolean(0) == 0


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("m1", {"value": "m1"}),
        ("", None),
        ({"value": ""}, None),
        ({"Value": None}, None),
        ([{"$ref": None, "value": "m1"}], {"$ref": None, "value": "m1"}),
        ({"value": "m1"}, {"value": "m1"}),
    ],
)
def test_manager_reference_normalises_every_manager_shape(sent, stored):
    assert entra.manager_reference(sent) == stored


def test_remove_by_value_array_leaves_other_operations_alone():
    parsed = parse_patch_request(
        {
            "Operations": [
                {"op": "Remove", "path": "members", "value": [{"value": "a"}]},
                {"op": "Remove", "path": "members"},
                {"op": "Add", "path": "members", "value": [{"value": "b"}]},
            ]
        }
    )
    normalised = entra.normalise_patch_operations(parsed, GROUPS)
    assert normalised[0].path == PatchPath(
        parsed[0].path.attr, Compare(parsed[0].path.attr.__class__(None, "value"), "eq", "a")
    )
    assert normalised[0].path_text == 'members[value eq "a"]'
    assert normalised[1:] == parsed[1:]
    assert entra.normalise_patch_operations(normalised, GROUPS) == normalised


def test_unqualified_manager_resolves_to_the_enterprise_extension_only_for_users():
    assert entra.resolve_attribute(USERS, "manager.value").path == f"{ENTERPRISE_USER}:manager.value"
    assert entra.resolve_attribute(USERS, "userName").schema == USER
    assert entra.resolve_attribute(GROUPS, "manager") is None
