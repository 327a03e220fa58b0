"""Attribute mapping and scope: paths, extensions, manager, transforms, filters."""

from __future__ import annotations

import pytest

from libs.connectors.mapping import FieldSource, Mapping, MappingError, Scope

ENT = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
USER = {
    "id": "u1", "userName": "Ada.Lovelace@Contoso.com", "active": False,
    "name": {"givenName": "Ada", "familyName": "Lovelace"},
    "emails": [{"type": "home", "value": "ada@home"}, {"type": "work", "value": "ada@work", "primary": True}],
    "phoneNumbers": [{"value": "1"}, {"value": "2"}],
    ENT: {"department": "Math", "manager": {"value": "u0"}},
    "groups": [{"value": "g1", "display": "Engineers"}],
}
BOSS = {"id": "u0", "userName": "Boss@Contoso.com"}


def lookup(resource_type, ids):
    return {i: BOSS for i in ids if i == "u0"}


def test_paths_extensions_manager_and_transforms_render_the_target_fields():
    mapping = Mapping.parse({"fields": {
        "login": {"path": "userName", "transform": "lowercase"},
        "mail": 'emails[type eq "work"].value',
        "dept": f"{ENT}:department",
        "boss": {"path": "manager", "ref": "userName", "transform": "lowercase"},
        "boss_id": "manager",
        "phones": {"path": "phoneNumbers.value", "join": ","},
        "gecos": {"template": "{name.givenName} {name.familyName}"},
        "country": {"path": "addresses.country", "default": "FR"},
        "enabled": "active",
    }})
    assert mapping.render(USER, lookup) == {
        "login": "ada.lovelace@contoso.com", "mail": "ada@work", "dept": "Math", "boss": "boss@contoso.com",
        "boss_id": "u0", "phones": "1,2", "gecos": "Ada Lovelace", "country": "FR", "enabled": False,
    }


def test_a_bad_mapping_is_refused_when_the_config_is_read():
    with pytest.raises(MappingError):
        FieldSource.parse("x", {"path": "a", "template": "{b}"})
    with pytest.raises(MappingError):
        FieldSource.parse("x", {"path": "a", "transform": "eval"})


def test_scope_by_filter_and_by_group_membership():
    assert Scope.parse({"users": 'userName ew "contoso.com"'}).includes("User", USER)
    assert not Scope.parse({"users": "active eq true"}).includes("User", USER)
    assert Scope.parse({"member_of": ["engineers"]}).includes("User", USER)
    assert not Scope.parse({"member_of": ["Sales"]}).includes("User", USER)
    assert not Scope.parse({"groups": 'displayName sw "app-"'}).includes("Group", {"displayName": "Engineers"})
