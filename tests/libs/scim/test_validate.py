"""validate_resource / coerce_value: the stored shape of Users and Groups (RFC 7643 §2, RFC 7644 §3.3)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.scim.errors import InvalidSyntax, InvalidValue
from libs.scim.schemas import ENTERPRISE_USER, GROUP, GROUPS, USER, USERS
from libs.scim.validate import coerce_value, parse_datetime, validate_resource

SAMPLES = Path(__file__).parents[2] / "samples"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def user(**extra: Any) -> dict[str, Any]:
    return validate_resource({"userName": "bjensen", **extra}, USERS)


def test_rfc7643_enterprise_user_sample_keeps_its_values_and_drops_read_only_ones():
    body = sample("rfc7643-8.3-enterprise_user")
    doc = validate_resource(body, USERS)
    assert doc["schemas"] == [USER, ENTERPRISE_USER]
    for dropped in ("id", "meta", "groups"):
        assert dropped not in doc
    assert doc["name"] == body["name"]
    assert doc["emails"] == body["emails"]
    assert doc["x509Certificates"] == body["x509Certificates"]
    assert doc["password"] == "t1meMa$heen"
    assert doc[ENTERPRISE_USER]["manager"] == {
        "value": "26118915-6090-4610-87e4-49d8ca9f808d",
        "$ref": "../Users/26118915-6090-4610-87e4-49d8ca9f808d",
    }


def test_validation_never_mutates_its_input_and_is_idempotent():
    body = sample("rfc7643-8.3-enterprise_user")
    before = copy.deepcopy(body)
    doc = validate_resource(body, USERS)
    assert body == before
    assert validate_resource(doc, USERS) == doc


def test_rfc7643_group_sample_keeps_member_ids_only():
    doc = validate_resource(sample("rfc7643-8.4-group"), GROUPS)
    assert doc == {
        "schemas": [GROUP],
        "displayName": "Tour Guides",
        "members": [
            {"value": "2819c223-7f76-453a-919d-413861904646"},
            {"value": "902c246b-6245-4190-8e05-00816be7344a"},
        ],
    }


def test_entra_create_user_is_accepted_with_meta_and_empty_roles_dropped():
    doc = validate_resource(sample("entra-create-user"), USERS)
    assert "meta" not in doc and "roles" not in doc
    assert doc["schemas"] == [USER]
    assert doc["active"] is True


def test_entra_sdk_create_user_with_explicit_nulls_drops_them():
    doc = validate_resource(sample("entra-create-user-sdk-nulls"), USERS)
    for dropped in ("addresses", "phoneNumbers", "title", "preferredLanguage", "department", "manager"):
        assert dropped not in doc
    assert ENTERPRISE_USER not in doc
    assert doc["displayName"] == "Joy Young"


def test_entra_create_user_with_manager_as_bare_string_stores_a_complex_manager():
    doc = validate_resource(sample("entra-create-user-manager-bare-string"), USERS)
    assert doc[ENTERPRISE_USER]["manager"] == {"value": "123456"}
    assert doc["schemas"] == [USER, ENTERPRISE_USER]


def test_entra_create_group_with_legacy_adscim_schema_uri_drops_the_unknown_uri():
    doc = validate_resource(sample("entra-create-group"), GROUPS)
    assert doc == {
        "schemas": [GROUP],
        "externalId": "8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159",
        "displayName": "displayName",
    }


def test_attribute_names_match_case_insensitively_and_come_out_canonical():
    doc = validate_resource(
        {"USERNAME": "a", "Name": {"GivenName": "B"}, "Emails": [{"Value": "a@b", "Primary": "True"}]}, USERS
    )
    assert doc == {
        "schemas": [USER],
        "userName": "a",
        "name": {"givenName": "B"},
        "emails": [{"value": "a@b", "primary": True}],
    }


def test_urn_qualified_top_level_keys_fold_into_their_schema():
    doc = validate_resource(
        {
            f"{USER}:userName": "a",
            f"{ENTERPRISE_USER}:employeeNumber": "1",
            f"{ENTERPRISE_USER}:manager": {"value": "m"},
            ENTERPRISE_USER: {"department": "D"},
        },
        USERS,
    )
    assert doc["userName"] == "a"
    assert doc[ENTERPRISE_USER] == {"employeeNumber": "1", "department": "D", "manager": {"value": "m"}}


def test_unqualified_enterprise_attribute_at_top_level_moves_into_the_extension():
    doc = user(department="Sales", manager="m-1")
    assert doc[ENTERPRISE_USER] == {"department": "Sales", "manager": {"value": "m-1"}}


def test_the_same_leaf_given_twice_with_different_values_is_invalid_syntax():
    with pytest.raises(InvalidSyntax):
        validate_resource({"userName": "a", "USERNAME": "b"}, USERS)
    with pytest.raises(InvalidSyntax):
        validate_resource({"userName": "a", "name": {"givenName": "x"}, "name.givenName": "y"}, USERS)


def test_unknown_attributes_and_unknown_extensions_are_ignored():
    doc = user(
        favouriteColour="blue",
        **{
            "urn:ietf:params:scim:schemas:extension:Custom:2.0:User": {"x": 1},
            "urn:ietf:params:scim:schemas:extension:Custom:2.0:User:y": "2",
        },
    )
    assert doc == {"schemas": [USER], "userName": "bjensen"}


def test_missing_schemas_is_tolerated_but_a_malformed_one_is_invalid_syntax():
    assert validate_resource({"userName": "a"}, USERS)["schemas"] == [USER]
    with pytest.raises(InvalidSyntax):
        validate_resource({"schemas": USER, "userName": "a"}, USERS)


@pytest.mark.parametrize("body", [[], "user", None, 42])
def test_a_body_that_is_not_an_object_is_invalid_syntax(body):
    with pytest.raises(InvalidSyntax):
        validate_resource(body, USERS)


@pytest.mark.parametrize("body", [{}, {"userName": ""}, {"userName": None}, {"displayName": "x"}])
def test_a_user_without_a_user_name_is_invalid_value(body):
    with pytest.raises(InvalidValue, match="userName"):
        validate_resource(body, USERS)


def test_a_group_without_a_display_name_is_invalid_value():
    with pytest.raises(InvalidValue, match="displayName"):
        validate_resource({"members": []}, GROUPS)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"active": "yes"}, "active"),
        ({"active": 1}, "active"),
        ({"displayName": 5}, "displayName"),
        ({"name": "Babs"}, "name"),
        ({"emails": {"value": "a@b"}}, "emails"),
        ({"emails": ["a@b"]}, "emails"),
        ({"emails": [{"value": 3}]}, "emails[0].value"),
        ({"emails": [{"value": "a", "primary": "maybe"}]}, "primary"),
        ({"x509Certificates": [{"value": "not base64!"}]}, "x509Certificates"),
        ({"profileUrl": ["https://x"]}, "profileUrl"),
    ],
)
def test_wrong_types_are_invalid_value_naming_the_attribute(extra, named):
    with pytest.raises(InvalidValue, match=named.replace("[", r"\[").replace("]", r"\]")):
        user(**extra)


def test_booleans_accept_entra_true_false_strings_in_any_case():
    assert user(active="False")["active"] is False
    assert user(active="TRUE")["active"] is True
    assert user(active=False)["active"] is False


def test_strings_longer_than_the_limit_are_invalid_value():
    validate_resource({"userName": "a" * 10}, USERS, max_value_length=10)
    with pytest.raises(InvalidValue, match="userName"):
        validate_resource({"userName": "a" * 11}, USERS, max_value_length=10)


def test_at_most_one_primary_value_per_multi_valued_attribute():
    with pytest.raises(InvalidValue, match="primary"):
        user(emails=[{"value": "a@b", "primary": True}, {"value": "c@d", "primary": "true"}])
    assert (
        len(user(emails=[{"value": "a@b", "primary": True}, {"value": "c@d", "primary": False}])["emails"])
        == 2
    )


def test_empty_strings_and_empty_objects_are_unassigned():
    doc = user(title="", name={"givenName": ""}, emails=[{}, {"value": "a@b", "type": ""}])
    assert doc == {"schemas": [USER], "userName": "bjensen", "emails": [{"value": "a@b"}]}


@pytest.mark.parametrize("manager", ["", {"value": ""}, {"value": None}, None, {}])
def test_an_empty_manager_means_no_manager(manager):
    doc = user(**{ENTERPRISE_USER: {"manager": manager, "department": "D"}})
    assert doc[ENTERPRISE_USER] == {"department": "D"}


def test_read_only_sub_attributes_are_dropped():
    doc = user(**{ENTERPRISE_USER: {"manager": {"value": "m", "displayName": "Boss"}}})
    assert doc[ENTERPRISE_USER]["manager"] == {"value": "m"}


def test_group_members_keep_value_and_canonical_type_only():
    doc = validate_resource(
        {
            "displayName": "G",
            "members": [{"value": "u1", "$ref": None, "display": "Babs"}, {"value": "g1", "type": "group"}],
        },
        GROUPS,
    )
    assert doc["members"] == [{"value": "u1"}, {"value": "g1", "type": "Group"}]


@pytest.mark.parametrize(
    "member", [{"value": ""}, {"value": 7}, {"display": "x"}, {"value": "u", "type": "Robot"}]
)
def test_a_member_without_a_usable_id_or_with_an_unknown_type_is_invalid_value(member):
    with pytest.raises(InvalidValue, match="members"):
        validate_resource({"displayName": "G", "members": [member]}, GROUPS)


def test_datetime_values_are_checked_and_kept_as_sent():
    assert parse_datetime("2011-05-13T04:42:34Z") is not None
    assert parse_datetime("2011-05-13T04:42:34.123456789+02:00") is not None
    for bad in ("2011-05-13", "2011-13-13T04:42:34Z", "yesterday", 5):
        assert parse_datetime(bad) is None


def test_values_are_stored_exactly_as_sent():
    doc = user(displayName="  Babs  JENSEN ", emails=[{"value": "BJensen@Example.COM", "type": "Work"}])
    assert doc["displayName"] == "  Babs  JENSEN "
    assert doc["emails"] == [{"value": "BJensen@Example.COM", "type": "Work"}]


def test_coerce_value_applies_the_same_rules_to_one_value():
    active = USERS.resolve("active").attribute
    manager = USERS.resolve(f"{ENTERPRISE_USER}:manager").attribute
    assert coerce_value(active, "false", "active") is False
    assert coerce_value(manager, "m-1", "manager") == {"value": "m-1"}
    assert coerce_value(manager, [{"$ref": None, "value": "m-1"}], "manager") == {"value": "m-1"}
    with pytest.raises(InvalidValue, match="nickName"):
        coerce_value(USERS.resolve("nickName").attribute, ["x"], "nickName")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_keys = st.sampled_from(
    [
        "userName",
        "USERNAME",
        "name",
        "name.givenName",
        "emails",
        "active",
        "title",
        "meta",
        "id",
        "groups",
        ENTERPRISE_USER,
        f"{ENTERPRISE_USER}:manager",
        "manager",
        "x509Certificates",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _json, max_size=6))
def test_validation_either_fails_with_a_scim_error_or_returns_a_fixed_point(body):
    before = copy.deepcopy(body)
    try:
        doc = validate_resource({"userName": "u", **body}, USERS)
    except (InvalidValue, InvalidSyntax):
        assert body == before
        return
    assert body == before
    assert validate_resource(doc, USERS) == doc
