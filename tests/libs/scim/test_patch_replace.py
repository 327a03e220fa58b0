"""PATCH ``replace`` (RFC 7644 §3.5.2.3), plus the engine's properties under hypothesis."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.scim.errors import InvalidValue, Mutability, NoTarget, ScimError
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, USER, USERS
from libs.scim.validate import validate_resource
from tests.libs.scim.helpers import BABS, JAMES, ops, patch, sample


def test_rfc7644_replace_members_sample_is_remove_all_then_add():
    group = validate_resource({"displayName": "Tour Guides"}, GROUPS)
    result = patch(group, sample("rfc7644-3.5.2.3-patch-replace_members"), GROUPS)
    assert result.members.remove_all is True
    assert result.members.add == [{"value": BABS}, {"value": JAMES}]
    assert result.resource == group


def test_rfc7644_replace_work_address_sample_replaces_the_whole_matching_address(babs):
    result = patch(babs, sample("rfc7644-3.5.2.3-patch-replace_work_address"))
    assert (
        result.resource["addresses"][0]
        == sample("rfc7644-3.5.2.3-patch-replace_work_address")["Operations"][0]["value"]
    )
    assert result.resource["addresses"][1] == babs["addresses"][1]


def test_rfc7644_replace_work_street_address_sample_changes_one_sub_attribute(babs):
    result = patch(babs, sample("rfc7644-3.5.2.3-patch-replace_work_street_address"))
    assert result.resource["addresses"][0] == {**babs["addresses"][0], "streetAddress": "1010 Broadway Ave"}


def test_rfc7644_pathless_replace_sample_replaces_emails_and_nickname(babs):
    result = patch(babs, sample("rfc7644-3.5.2.3-patch-replace_pathless"))
    assert result.resource["emails"] == [
        {"value": "bjensen@example.com", "type": "work", "primary": True},
        {"value": "babs@jensen.org", "type": "home"},
    ]
    assert result.changed is False  # the sample re-states what the RFC's user already holds


def test_replace_of_a_multi_valued_attribute_replaces_all_values(babs):
    result = patch(
        babs, ops({"op": "replace", "path": "phoneNumbers", "value": [{"value": "1", "type": "fax"}]})
    )
    assert result.resource["phoneNumbers"] == [{"value": "1", "type": "fax"}]


def test_replace_of_a_complex_attribute_leaves_unmentioned_sub_attributes(babs):
    result = patch(babs, ops({"op": "replace", "path": "name", "value": {"familyName": "Jensen-Smith"}}))
    assert result.resource["name"] == {**babs["name"], "familyName": "Jensen-Smith"}


def test_replace_of_a_missing_attribute_adds_it():
    user = validate_resource({"userName": "u"}, USERS)
    result = patch(user, ops({"op": "replace", "path": "name.givenName", "value": "G"}))
    assert result.resource["name"] == {"givenName": "G"}


def test_replace_with_a_filter_that_matches_several_values_replaces_each(babs):
    result = patch(babs, ops({"op": "replace", "path": 'phoneNumbers[value sw "555"].display', "value": "x"}))
    assert all(p["display"] == "x" for p in result.resource["phoneNumbers"])


def test_replace_of_matched_values_keeps_the_filter_type_when_the_value_omits_it(babs):
    result = patch(
        babs, ops({"op": "replace", "path": 'emails[type eq "home"]', "value": {"value": "new@home"}})
    )
    assert result.resource["emails"][1] == {"type": "home", "value": "new@home"}


@pytest.mark.parametrize(
    "path",
    [
        'emails[value ew ".invalid"].type',
        'ims[type eq "icq" or type eq "qq"].display',
        "ims[not (type pr)].display",
        'ims[type eq "icq" and type eq "qq"].display',
    ],
)
def test_replace_with_a_filter_that_matches_nothing_and_describes_no_single_value_is_no_target(babs, path):
    with pytest.raises(NoTarget):
        patch(babs, ops({"op": "replace", "path": path, "value": "x"}))


def test_replace_setting_primary_on_one_value_demotes_the_others(babs):
    result = patch(babs, ops({"op": "replace", "path": 'emails[type eq "home"].primary', "value": True}))
    assert [e.get("primary") for e in result.resource["emails"]] == [False, True]


def test_replace_with_null_or_empty_string_clears_an_optional_attribute(babs):
    result = patch(
        babs,
        ops(
            {"op": "replace", "path": "title", "value": ""},
            {"op": "replace", "path": "name", "value": None},
            {"op": "replace", "path": "emails", "value": None},
        ),
    )
    assert not {"title", "name", "emails"} & set(result.resource)


def test_replace_of_user_name_with_empty_string_is_a_mutability_error(babs):
    with pytest.raises(Mutability, match="userName"):
        patch(babs, ops({"op": "replace", "path": "userName", "value": ""}))


def test_replace_of_id_or_meta_is_a_mutability_error(babs):
    for path in ("id", "meta", "meta.version"):
        with pytest.raises(Mutability):
            patch(babs, ops({"op": "replace", "path": path, "value": "x"}))


def test_replace_with_two_primaries_is_invalid_value(babs):
    with pytest.raises(InvalidValue, match="primary"):
        patch(
            babs,
            ops(
                {
                    "op": "replace",
                    "path": "emails",
                    "value": [{"value": "a", "primary": True}, {"value": "b", "primary": True}],
                }
            ),
        )


def test_replace_of_active_with_a_non_boolean_is_invalid_value(babs):
    with pytest.raises(InvalidValue, match="active"):
        patch(babs, ops({"op": "replace", "path": "active", "value": "nope"}))


def test_replace_with_the_same_value_reports_no_change(babs):
    result = patch(
        babs,
        ops(
            {"op": "replace", "path": "userName", "value": babs["userName"]},
            {"op": "replace", "path": f"{ENTERPRISE_USER}:department", "value": "Tour Operations"},
        ),
    )
    assert result.changed is False


def test_replace_of_the_whole_enterprise_extension_merges_its_attributes(babs):
    result = patch(babs, ops({"op": "replace", "path": ENTERPRISE_USER, "value": {"division": "Studios"}}))
    assert result.resource[ENTERPRISE_USER] == {**babs[ENTERPRISE_USER], "division": "Studios"}
    cleared = patch(babs, ops({"op": "replace", "path": ENTERPRISE_USER, "value": None}))
    assert ENTERPRISE_USER not in cleared.resource and cleared.resource["schemas"] == [USER]


def test_replace_of_a_display_name_on_a_group_leaves_members_alone():
    group = validate_resource({"displayName": "G"}, GROUPS)
    result = patch(group, ops({"op": "replace", "path": "displayName", "value": "H"}), GROUPS)
    assert result.resource["displayName"] == "H" and result.members is None


# -- properties ------------------------------------------------------------------------------------

_PATHS = [
    "userName",
    "title",
    "nickName",
    "active",
    "name",
    "name.givenName",
    "emails",
    'emails[type eq "work"]',
    'emails[type eq "work"].value',
    "emails.primary",
    'phoneNumbers[type eq "mobile"].value',
    "addresses",
    f"{ENTERPRISE_USER}:manager",
    f"{ENTERPRISE_USER}:manager.value",
    'manager[value eq "m"]',
    "manager",
    f"{ENTERPRISE_USER}:employeeNumber",
    ENTERPRISE_USER,
    "roles",
    "x509Certificates",
    "id",
    "meta",
    "nope",
]
_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(["", "m", "work", "True", "false", "a@b"])
)
_value = st.recursive(
    _scalar,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["value", "Value", "type", "primary", "givenName", "display", "$ref", "manager", "x"]
            ),
            children,
            max_size=3,
        )
    ),
    max_leaves=6,
)
_op = st.builds(
    lambda op, path, value: (
        {"op": op, "value": value} if path is None else {"op": op, "path": path, "value": value}
    ),
    st.sampled_from(["add", "Add", "replace", "Replace", "remove", "Remove"]),
    st.none() | st.sampled_from(_PATHS),
    _value,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, min_size=1, max_size=4))
def test_a_patch_never_mutates_its_input_and_its_result_always_revalidates(operations):
    resource = validate_resource(sample("rfc7643-8.3-enterprise_user"), USERS)
    before = copy.deepcopy(resource)
    body = ops(*operations)
    body_before = copy.deepcopy(body)
    try:
        result = patch(resource, body)
    except ScimError:
        assert resource == before and body == body_before
        return
    assert resource == before and body == body_before
    assert validate_resource(result.resource, USERS) == result.resource
    assert result.changed == (result.resource != resource)
