"""Name resolution over a resource type's schemas."""

from __future__ import annotations

from libs.scim import schemas
from libs.scim.schemas import ENTERPRISE_USER, USERS


def test_names_a_client_makes_up_cannot_grow_what_a_resource_type_remembers():
    for i in range(schemas._RESOLVED_KEPT + 500):
        assert USERS.resolve(f"madeUp{i}") is None
    assert len(USERS._resolved) <= schemas._RESOLVED_KEPT
    # Once full, names are still resolved, only not remembered.
    assert USERS.resolve("NAME.givenName").path == "name.givenName"
    assert USERS.resolve(f"{ENTERPRISE_USER}:manager.value").path == f"{ENTERPRISE_USER}:manager.value"


def test_a_remembered_name_resolves_as_it_did_the_first_time():
    first = USERS.resolve("emails.value")
    assert USERS.resolve("emails.value") == first
    assert first.attribute.multi_valued and first.sub.name == "value"
