"""Extension schemas from the config file: parsed, checked, attached to the resource types."""

from __future__ import annotations

import pytest

from libs.scim import extensions
from libs.scim.schemas import ENTERPRISE_USER, USERS
from libs.scim.validate import validate_resource

ACME = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"

ACME_TABLE = {
    "id": ACME, "resource_type": "User", "name": "AcmeUser", "description": "Acme badge data",
    "attributes": [
        {"name": "badgeNumber", "type": "integer", "required": False},
        {"name": "site", "canonical_values": ["north", "south"]},
        {"name": "clearance", "type": "complex", "sub_attributes": [
            {"name": "level", "type": "integer"}, {"name": "until", "type": "dateTime"}]},
    ],
}


@pytest.fixture
def acme():
    extensions.install({"schemas": [ACME_TABLE]})
    yield
    extensions.install({})


def test_a_declared_extension_is_attached_to_users_after_the_enterprise_one(acme):
    assert USERS.schema_urns[1:] == (ENTERPRISE_USER, ACME)
    assert USERS.resolve(f"{ACME}:clearance.level").leaf.type == "integer"
    assert ACME in [s.urn for s in extensions.all_schemas()]


def test_installing_again_is_idempotent_and_an_empty_file_removes_it(acme):
    extensions.install({"schemas": [ACME_TABLE]})
    assert USERS.schema_urns.count(ACME) == 1
    extensions.install({})
    assert USERS.schema_urns == (USERS.core.urn, ENTERPRISE_USER)


def test_a_name_resolved_before_an_extension_changes_is_resolved_afresh_after():
    name = f"{ACME}:badgeNumber"
    assert USERS.resolve(name) is None  # remembered as unknown
    extensions.install({"schemas": [ACME_TABLE]})
    try:
        assert USERS.resolve(name).attribute.type == "integer"
    finally:
        extensions.install({})
    assert USERS.resolve(name) is None


def test_values_of_the_extension_are_validated_by_type(acme):
    doc = validate_resource({"userName": "a", ACME: {"badgeNumber": 7, "SITE": "north"}}, USERS)
    assert doc[ACME] == {"badgeNumber": 7, "site": "north"} and ACME in doc["schemas"]
    with pytest.raises(Exception, match="integer"):
        validate_resource({"userName": "a", ACME: {"badgeNumber": "seven"}}, USERS)


@pytest.mark.parametrize("table, message", [
    ({**ACME_TABLE, "id": "not a urn"}, "id must be a schema URN"),
    ({**ACME_TABLE, "id": ENTERPRISE_USER}, "built-in"),
    ({**ACME_TABLE, "resource_type": "Device"}, "resource_type"),
    ({**ACME_TABLE, "attributes": []}, "at least one"),
    ({**ACME_TABLE, "attributes": [{"name": "x", "type": "float"}]}, "type must be one of"),
    ({**ACME_TABLE, "attributes": [{"name": "x", "colour": "red"}]}, "unknown keys"),
    ({**ACME_TABLE, "attributes": [{"name": "x", "type": "complex"}]}, "needs sub_attributes"),
    ({**ACME_TABLE, "attributes": [{"name": "x"}, {"name": "X"}]}, "share a name"),
    ({**ACME_TABLE, "attributes": [{"name": "x", "uniqueness": "server"}]}, "uniqueness"),
])
def test_a_bad_table_is_refused_with_a_message_naming_it(table, message):
    with pytest.raises(extensions.SchemaConfigError, match=message):
        extensions.install({"schemas": [table]})
    assert USERS.schema_urns == (USERS.core.urn, ENTERPRISE_USER)


def test_a_write_only_extension_attribute_is_never_returned():
    from libs.scim.render import with_location

    extensions.install({"schemas": [{**ACME_TABLE, "attributes": [{"name": "pin", "mutability": "writeOnly"},
                                                                   {"name": "site"}]}]})
    try:
        assert USERS.resolve(f"{ACME}:pin").attribute.returned == "never"
        doc = with_location({"id": "1", "meta": {}, ACME: {"pin": "1234", "site": "north"}}, "http://h/scim", USERS)
        assert doc[ACME] == {"site": "north"}
        with pytest.raises(extensions.SchemaConfigError, match="returned never"):
            extensions.install({"schemas": [{**ACME_TABLE, "attributes": [
                {"name": "pin", "mutability": "writeOnly", "returned": "default"}]}]})
    finally:
        extensions.install({})


def test_an_unnamed_extension_is_named_like_the_enterprise_one():
    table = {k: v for k, v in ACME_TABLE.items() if k != "name"}
    assert extensions.parse_schemas([table])["User"][0].name == "AcmeUser"
