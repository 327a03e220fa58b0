"""One policy for attributes no schema declares, in resource bodies (POST, PUT) and in PATCH
requests, wherever the name sits (``libs.scim.undeclared``)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from libs.scim import undeclared
from libs.scim.errors import InvalidPath
from libs.scim.patch import apply_patch, parse_patch_request
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, USERS
from libs.scim.undeclared import Policy, UndeclaredPath
from libs.scim.validate import validate_resource
from tests.libs.scim.helpers import ops

CONTOSO = "urn:ietf:params:scim:schemas:extension:Contoso:2.0:User"

# (body, the names it carries that no schema declares); userName/displayName are added.
BODIES = [
    ({"favouriteColour": "1"}, ["favouriteColour"]),
    ({"name": {"givenName": "A", "nick": "x"}}, ["name.nick"]),
    ({"emails": [{"value": "a@contoso.example", "colour": "red"}]}, ["emails.colour"]),
    ({"name.nick": "x"}, ["name.nick"]),
    ({CONTOSO: {"costCenter": "1", "grade": 2}}, [f"{CONTOSO}:costCenter", f"{CONTOSO}:grade"]),
    ({f"{CONTOSO}:costCenter": "1"}, [f"{CONTOSO}:costCenter"]),
    ({ENTERPRISE_USER: {"colour": "red"}}, [f"{ENTERPRISE_USER}:colour"]),
    ({f"{ENTERPRISE_USER}:colour": "red"}, [f"{ENTERPRISE_USER}:colour"]),
    ({ENTERPRISE_USER: {"manager": {"value": "m", "colour": 1}}}, [f"{ENTERPRISE_USER}:manager.colour"]),
    ({"favouriteColour": None}, ["favouriteColour"]),
]

# (one PATCH operation on a user, the names it names that no schema declares)
OPERATIONS = [
    ({"op": "add", "path": "favouriteColour", "value": "1"}, ["favouriteColour"]),
    ({"op": "Replace", "path": "favouriteColour", "value": "1"}, ["favouriteColour"]),
    ({"op": "remove", "path": "favouriteColour"}, ["favouriteColour"]),
    ({"op": "replace", "path": "name.nick", "value": "x"}, ["name.nick"]),
    ({"op": "replace", "path": 'emails[type eq "work"].colour', "value": "red"}, ["emails.colour"]),
    ({"op": "add", "path": 'emails[colour eq "red"].value', "value": "a@contoso.example"}, ["emails.colour"]),
    ({"op": "remove", "path": 'emails[colour eq "red"]'}, ["emails.colour"]),
    ({"op": "Replace", "path": f"{CONTOSO}:costCenter", "value": "43"}, [f"{CONTOSO}:costCenter"]),
    ({"op": "remove", "path": f"{CONTOSO}:costCenter"}, [f"{CONTOSO}:costCenter"]),
    ({"op": "add", "path": CONTOSO, "value": {"costCenter": "1"}}, [f"{CONTOSO}:costCenter"]),
    ({"op": "replace", "path": f'{CONTOSO}:phones[type eq "work"].value', "value": "1"}, [f"{CONTOSO}:phones"]),
    ({"op": "replace", "path": f"{ENTERPRISE_USER}:colour", "value": "red"}, [f"{ENTERPRISE_USER}:colour"]),
    ({"op": "add", "path": ENTERPRISE_USER, "value": {"colour": "red"}}, [f"{ENTERPRISE_USER}:colour"]),
    ({"op": "replace", "path": "name", "value": {"nick": "x"}}, ["name.nick"]),
    ({"op": "add", "path": "emails", "value": [{"colour": "red"}]}, ["emails.colour"]),
    ({"op": "replace", "value": {"favouriteColour": "1", f"{CONTOSO}:costCenter": "2", CONTOSO: {"grade": 3},
                                 "name.nick": "x", 'emails[type eq "work"].colour': "red", "bad path[": 1}},
     ["favouriteColour", f"{CONTOSO}:costCenter", f"{CONTOSO}:grade", "name.nick", "emails.colour", "bad path["]),
]


def _user() -> dict:
    return validate_resource({"userName": "bjensen", "emails": [{"value": "b@contoso.example", "type": "work"}]},
                             USERS)


@pytest.mark.parametrize(("extra", "names"), BODIES)
def test_a_body_stores_only_what_is_declared_and_names_the_rest(extra, names):
    seen: list[str] = []
    doc = validate_resource({"userName": "bjensen", **extra}, USERS, undeclared=seen.append)
    assert seen == names
    assert doc == validate_resource({"userName": "bjensen", **extra}, USERS)  # the silent default: the same
    assert "olour" not in str(doc) and "costCenter" not in str(doc) and "nick" not in str(doc)
    with pytest.raises(UndeclaredPath) as refused:
        validate_resource({"userName": "bjensen", **extra}, USERS, undeclared=Policy("reject"))
    assert refused.value.scim_type == "invalidPath" and isinstance(refused.value, InvalidPath)


def test_an_undeclared_sub_attribute_of_a_group_member_is_named():
    seen: list[str] = []
    doc = validate_resource({"displayName": "g", "members": [{"value": "u1", "colour": "x", "$ref": None}]}, GROUPS,
                            undeclared=seen.append)
    assert seen == ["members.colour"] and doc["members"] == [{"value": "u1"}]


@pytest.mark.parametrize(("operation", "names"), OPERATIONS)
def test_a_patch_operation_on_an_undeclared_attribute_changes_nothing_and_names_it(operation, names):
    user = _user()
    seen: list[str] = []
    result = apply_patch(user, parse_patch_request(ops(operation)), USERS, undeclared=seen.append)
    assert seen == names
    assert result.resource == user and result.changed is False
    assert apply_patch(user, parse_patch_request(ops(operation)), USERS).resource == user  # silent default
    with pytest.raises(UndeclaredPath) as refused:
        apply_patch(user, parse_patch_request(ops(operation)), USERS, undeclared=Policy("reject"))
    assert refused.value.scim_type == "invalidPath"


def test_declared_parts_of_a_patch_apply_next_to_ignored_ones():
    seen: list[str] = []
    result = apply_patch(_user(), parse_patch_request(ops(
        {"op": "add", "path": ENTERPRISE_USER, "value": {"department": "Tour", "colour": "red"}},
        {"op": "replace", "value": {"title": "Guide", "favouriteColour": "1"}},
        {"op": "replace", "path": "name", "value": {"givenName": "Barbara", "nick": "Babs"}})), USERS,
        undeclared=seen.append)
    assert result.resource[ENTERPRISE_USER] == {"department": "Tour"}
    assert result.resource["title"] == "Guide" and result.resource["name"] == {"givenName": "Barbara"}
    assert seen == [f"{ENTERPRISE_USER}:colour", "favouriteColour", "name.nick"]


def test_a_member_filter_on_an_undeclared_sub_attribute_removes_nobody():
    group = validate_resource({"displayName": "g"}, GROUPS)
    seen: list[str] = []
    result = apply_patch(group, parse_patch_request(ops({"op": "remove", "path": 'members[colour eq "x"]'})),
                         GROUPS, undeclared=seen.append)
    assert seen == ["members.colour"] and result.members is None


def _count(label: str) -> float:
    return REGISTRY.get_sample_value("scim_undeclared_attributes_total", {"attribute": label}) or 0.0


def test_ignore_reports_each_name_once_per_request_logs_it_once_per_process_and_counts_it(caplog):
    name = "costCentre" + str(id(caplog))  # a name no other test met in this process
    before = _count(name)
    with caplog.at_level(logging.WARNING, logger="scimbus.scim"):
        for _ in range(2):
            policy = Policy("ignore")
            policy(name)
            policy(name)
            policy.report()
    assert _count(name) == before + 2
    assert [r.getMessage() for r in caplog.records].count(
        f"ignored the undeclared attribute {name} (SCIM_UNKNOWN_ATTRIBUTES=ignore); declare it in a [[schemas]] "
        "table of the config file to keep its values") == 1


def test_the_metric_labels_at_most_max_names_names_and_never_one_that_is_no_attribute_name(monkeypatch, caplog):
    labels = undeclared._Labels()
    monkeypatch.setattr(undeclared, "_labels", labels)
    monkeypatch.setattr(undeclared, "MAX_NAMES", 3)
    with caplog.at_level(logging.WARNING, logger="scimbus.scim"):
        policy = Policy("ignore")
        for name in ("a1", "A1", "a2", "a3", "a4", "a5", "not a name", "x" * 300, "{\"$where\": 1}"):
            policy(name)
        policy.report()
    assert set(labels.known.values()) == {"a1", "a2", "a3"}
    assert _count(undeclared.OTHER) >= 2 and _count(undeclared.INVALID) >= 3
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "a4" not in logged and "not a name" not in logged and "more than 3 undeclared" in logged
