"""``apply_patch(..., validated=True)``: the worker's stored documents are not validated again,
and the result is the one the full validation gives."""

from __future__ import annotations

import pytest

from libs.scim.validate import validate_resource
from libs.scim.schemas import GROUPS, USERS
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
