"""PATCH ``remove`` (RFC 7644 §3.5.2.2), including group members kept outside the document."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.scim.errors import InvalidFilter, InvalidPath, InvalidValue, Mutability
from libs.scim.patch import MemberChanges
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, USER, USERS
from libs.scim.validate import validate_resource
from tests.libs.scim.helpers import BABS, JAMES, ops, patch, sample


def no_loading() -> list[dict[str, Any]]:
    raise AssertionError("members must not be loaded for this operation")


def test_rfc7644_remove_member_sample_removes_one_id_without_loading_members(group):
    result = patch(group, sample("rfc7644-3.5.2.2-patch-remove_member"), GROUPS, load_members=no_loading)
    assert result.members == MemberChanges(add=[], remove={BABS}, remove_all=False)
    assert result.changed is False and result.resource == group


def test_rfc7644_remove_all_members_sample(group):
    result = patch(group, sample("rfc7644-3.5.2.2-patch-remove_all_members"), GROUPS, load_members=no_loading)
    assert result.members == MemberChanges(add=[], remove=set(), remove_all=True)


def test_rfc7644_remove_and_add_member_sample(group):
    result = patch(
        group, sample("rfc7644-3.5.2.2-patch-remove_and_add_member"), GROUPS, load_members=no_loading
    )
    assert result.members == MemberChanges(add=[{"value": JAMES}], remove={BABS}, remove_all=False)


def test_rfc7644_remove_all_members_then_add_sample(group):
    result = patch(group, sample("rfc7644-3.5.2.2-patch-remove_all_members_then_add"), GROUPS)
    assert result.members == MemberChanges(
        add=[{"value": BABS}, {"value": JAMES}], remove=set(), remove_all=True
    )


def test_member_operations_fold_in_order(group):
    result = patch(
        group,
        ops(
            {"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}]},
            {"op": "remove", "path": 'members[value eq "a"]'},
            {"op": "add", "path": "members", "value": [{"value": "c", "type": "User"}]},
            {"op": "remove", "path": 'members[value eq "c" or value eq "d"]'},
            {"op": "add", "path": "members", "value": [{"value": "d"}]},
        ),
        GROUPS,
        load_members=no_loading,
    )
    assert result.members == MemberChanges(
        add=[{"value": "b"}, {"value": "d"}], remove={"a", "c"}, remove_all=False
    )


def test_a_member_filter_other_than_value_eq_loads_members_once(group):
    calls = []

    def load() -> list[dict[str, Any]]:
        calls.append(1)
        return [
            {"value": "u1", "display": "Babs Jensen", "type": "User"},
            {"value": "u2", "display": "James Smith"},
            {"value": "g1", "display": "Guides", "type": "Group"},
        ]

    result = patch(
        group,
        ops(
            {"op": "add", "path": "members", "value": [{"value": "u3", "type": "User"}]},
            {"op": "remove", "path": 'members[display co "smith"]'},
            {"op": "remove", "path": 'members[type eq "User"]'},
        ),
        GROUPS,
        load_members=load,
    )
    assert calls == [1]
    assert result.members == MemberChanges(add=[], remove={"u2", "u1", "u3"}, remove_all=False)


def test_a_complex_member_filter_without_a_loader_is_invalid_filter(group):
    with pytest.raises(InvalidFilter):
        patch(group, ops({"op": "remove", "path": 'members[display co "x"]'}), GROUPS)


def test_member_sub_attributes_and_filtered_member_adds_are_invalid_paths(group):
    for op in (
        {"op": "replace", "path": "members.value", "value": "x"},
        {"op": "remove", "path": "members.type"},
        {"op": "add", "path": 'members[value eq "u1"]', "value": {"value": "u1"}},
        {"op": "remove", "path": 'members[value eq "u1"].type'},
    ):
        with pytest.raises(InvalidPath):
            patch(group, ops(op), GROUPS)


def test_changing_a_members_read_only_display_is_a_mutability_error(group):
    with pytest.raises(Mutability):
        patch(group, ops({"op": "replace", "path": "members.display", "value": "x"}), GROUPS)


def test_remove_of_members_with_a_value_that_is_not_a_member_list_is_invalid_value(group):
    with pytest.raises(InvalidValue):
        patch(group, ops({"op": "remove", "path": "members", "value": "u1"}), GROUPS)


def test_remove_of_members_with_an_empty_value_array_removes_nobody(group):
    result = patch(group, ops({"op": "remove", "path": "members", "value": []}), GROUPS)
    assert result.members is None and result.changed is False


def test_rfc7644_remove_emails_by_type_and_domain(babs):
    result = patch(babs, sample("rfc7644-3.5.2.2-patch-remove_work_example_emails"))
    assert result.resource["emails"] == [{"value": "babs@jensen.org", "type": "home"}]


def test_remove_of_a_single_valued_attribute_unassigns_it(babs):
    result = patch(babs, ops({"op": "remove", "path": "title"}, {"op": "remove", "path": "name.middleName"}))
    assert "title" not in result.resource and "middleName" not in result.resource["name"]


def test_remove_of_the_last_matching_values_unassigns_the_attribute(babs):
    result = patch(babs, ops({"op": "remove", "path": 'ims[type eq "aim"]'}))
    assert "ims" not in result.resource


def test_remove_of_a_sub_attribute_of_matching_values(babs):
    result = patch(babs, ops({"op": "remove", "path": 'addresses[type eq "work"].formatted'}))
    assert "formatted" not in result.resource["addresses"][0]
    assert "formatted" in result.resource["addresses"][1]


def test_remove_of_a_sub_attribute_across_all_values(babs):
    result = patch(babs, ops({"op": "remove", "path": "emails.primary"}))
    assert all("primary" not in e for e in result.resource["emails"])


def test_remove_of_an_attribute_without_a_value_succeeds_without_change(babs):
    result = patch(
        babs,
        ops(
            {"op": "remove", "path": "preferredLanguage"},
            {"op": "remove", "path": "preferredLanguage"},
            {"op": "remove", "path": "entitlements"},
        ),
    )
    assert result.resource == {k: v for k, v in babs.items() if k != "preferredLanguage"}
    again = patch(result.resource, ops({"op": "remove", "path": "preferredLanguage"}))
    assert again.changed is False


def test_remove_with_a_filter_matching_nothing_succeeds_without_change(babs):
    result = patch(babs, ops({"op": "remove", "path": 'emails[type eq "other"]'}))
    assert result.changed is False


def test_remove_of_the_whole_enterprise_extension(babs):
    result = patch(babs, ops({"op": "remove", "path": ENTERPRISE_USER}))
    assert ENTERPRISE_USER not in result.resource and result.resource["schemas"] == [USER]


def test_remove_of_the_last_enterprise_attribute_drops_the_extension_urn():
    user = validate_resource({"userName": "u", ENTERPRISE_USER: {"department": "D"}}, USERS)
    result = patch(user, ops({"op": "remove", "path": f"{ENTERPRISE_USER}:department"}))
    assert result.resource == {"schemas": [USER], "userName": "u"}


def test_remove_of_a_required_attribute_is_a_mutability_error(babs):
    with pytest.raises(Mutability, match="userName"):
        patch(babs, ops({"op": "remove", "path": "userName"}))
    with pytest.raises(Mutability, match="displayName"):
        patch(
            validate_resource({"displayName": "G"}, GROUPS),
            ops({"op": "remove", "path": "displayName"}),
            GROUPS,
        )


def test_remove_of_a_read_only_attribute_is_a_mutability_error(babs):
    for path in ("id", "meta", "groups", 'groups[value eq "x"]'):
        with pytest.raises(Mutability):
            patch(babs, ops({"op": "remove", "path": path}))


def test_remove_of_a_multi_valued_attribute_with_an_unusable_value_is_invalid_value(babs):
    with pytest.raises(InvalidValue):
        patch(babs, ops({"op": "remove", "path": "emails", "value": {"value": "babs@jensen.org"}}))


def test_remove_with_a_filter_comparing_a_sub_attribute_by_a_dotted_name_is_invalid_filter(babs):
    with pytest.raises(InvalidFilter):
        patch(babs, ops({"op": "remove", "path": 'emails[type.value eq "red"]'}))


_member_op = st.one_of(
    st.builds(
        lambda ids: {"op": "add", "path": "members", "value": [{"value": i} for i in ids]},
        st.lists(st.sampled_from("abcde"), max_size=3),
    ),
    st.builds(
        lambda ids: {"op": "replace", "path": "members", "value": [{"value": i} for i in ids]},
        st.lists(st.sampled_from("abcde"), max_size=3),
    ),
    st.builds(lambda i: {"op": "remove", "path": f'members[value eq "{i}"]'}, st.sampled_from("abcde")),
    st.builds(
        lambda ids: {"op": "Remove", "path": "members", "value": [{"value": i} for i in ids]},
        st.lists(st.sampled_from("abcde"), min_size=1, max_size=3),
    ),
    st.builds(lambda i: {"op": "remove", "path": f'members[value sw "{i}"]'}, st.sampled_from("abcde")),
    st.just({"op": "remove", "path": "members"}),
)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.sampled_from("abcde")), st.lists(_member_op, min_size=1, max_size=6))
def test_member_changes_give_the_same_membership_as_replaying_the_operations(current, operations):
    expected = set(current)
    for op in operations:
        if op["op"] == "add":
            expected |= {m["value"] for m in op["value"]}
        elif op["op"] == "replace":
            expected = {m["value"] for m in op["value"]}
        elif "value" in op:
            expected -= {m["value"] for m in op["value"]}
        elif op["path"] == "members":
            expected = set()
        else:
            expected -= {op["path"].split('"')[1]}
    group = validate_resource({"displayName": "G"}, GROUPS)
    before = copy.deepcopy(group)
    result = patch(
        group, ops(*operations), GROUPS, load_members=lambda: [{"value": i} for i in sorted(current)]
    )
    assert group == before
    changes = result.members
    members = set() if changes.remove_all else set(current) - changes.remove
    members |= {m["value"] for m in changes.add}
    assert members == expected
