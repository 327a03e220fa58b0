"""The LDAP connector against a real slapd: DN templates, renames, member DNs, removal modes."""

from __future__ import annotations

import tomllib

import pytest

from libs.connectors.base import Previous
from libs.connectors.errors import Rejected, Unavailable
from libs.connectors.mapping import FieldSource
from libs.connectors.registry import build_connector
from tests.support.ldap import SUFFIX, ldap_connector_toml, slapd_server
from tests.support.servers import free_port

PEOPLE, GROUPS, DISABLED = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}", f"ou=disabled,{SUFFIX}"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    with slapd_server(tmp_path_factory.mktemp("slapd")) as server:
        yield server


def _connector(url: str, **users_options):
    spec = tomllib.loads(ldap_connector_toml("corp", url))["connectors"]["corp"]
    spec["users"].update(users_options)
    return build_connector("corp", spec)


class Directory:
    def __init__(self, *docs: dict) -> None:
        self.docs = {d["id"]: d for d in docs}

    def __call__(self, resource_type: str, ids: list[str]) -> dict:
        return {i: self.docs[i] for i in ids if i in self.docs}


def _apply(connector, kind: str, doc: dict, directory: Directory, previous: Previous | None = None) -> str:
    fields = connector.render(kind, doc, directory)
    return connector.apply(kind, doc, fields, previous or Previous(None, False), directory)


def _entry(slapd, dn: str, *attrs: str):
    conn = slapd.connection()
    conn.search(dn, "(objectClass=*)", "BASE", attributes=list(attrs) or ["*"])
    entries = list(conn.entries)
    conn.unbind()
    return entries[0] if entries else None


def _user(id: str, name: str, manager: str | None = None) -> dict:
    doc = {"id": id, "userName": name, "name": {"givenName": "Ada", "familyName": "Lovelace"}}
    if manager:
        doc["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = {"manager": {"value": manager}}
    return doc


def test_a_rename_moves_the_entry_and_rewrites_member_and_manager_dns(slapd):
    corp = _connector(slapd.url)
    boss, ada = _user("b1", "boss"), _user("a1", "ada", manager="b1")
    group = {"id": "g1", "displayName": "team", "members": [{"value": "a1", "type": "User"}]}
    directory = Directory(boss, ada, group)
    old = _apply(corp, "User", ada, directory)
    _apply(corp, "User", boss, directory)
    _apply(corp, "Group", group, directory)
    assert _entry(slapd, old, "manager").manager.value == f"uid=boss,{PEOPLE}"

    ada["userName"] = "ada.l"
    new = _apply(corp, "User", ada, directory, Previous(old, True))
    assert new == f"uid=ada.l,{PEOPLE}" and _entry(slapd, old) is None
    assert _entry(slapd, f"cn=team,{GROUPS}", "member").member.values == [new]

    # The last member leaves: groupOfNames keeps a placeholder, read back as no member.
    group["members"] = []
    _apply(corp, "Group", group, directory)
    assert corp.read("Group")[f"cn=team,{GROUPS}"]["member"] == []
    corp.remove("User", "a1", Previous(new, True))
    assert _entry(slapd, new) is None
    corp.close()


def _rename_behind_the_ledger(slapd, dn: str, rdn: str) -> None:
    """What a rename whose answer was lost leaves: the entry renamed, its groups not yet
    rewritten, and the ledger still naming the old DN."""
    conn = slapd.connection()
    assert conn.modify_dn(dn, rdn)
    conn.unbind()


def test_a_rename_finds_by_its_anchor_an_entry_renamed_under_a_name_it_was_never_told(slapd):
    corp = _connector(slapd.url)
    fay = _user("f1", "fay")
    group = {"id": "g2", "displayName": "crew", "members": [{"value": "f1", "type": "User"}]}
    directory = Directory(fay, group)
    recorded = _apply(corp, "User", fay, directory)
    _apply(corp, "Group", group, directory)
    _rename_behind_the_ledger(slapd, recorded, "uid=fay.b")

    fay["userName"] = "fay.c"
    new = _apply(corp, "User", fay, directory, Previous(recorded, True))
    assert _entry(slapd, f"uid=fay.b,{PEOPLE}") is None and _entry(slapd, new) is not None
    assert _entry(slapd, f"cn=crew,{GROUPS}", "member").member.values == [new]
    corp.close()


def test_removal_takes_the_entry_of_the_resource_wherever_it_is_and_never_another(slapd):
    corp = _connector(slapd.url)
    recorded = _apply(corp, "User", _user("h1", "gil"), Directory())
    _rename_behind_the_ledger(slapd, recorded, "uid=gil.b")
    newcomer = _user("h2", "gil")  # another user took the old name, and joined a group by it
    group = {"id": "g3", "displayName": "pair", "members": [{"value": "h2", "type": "User"}]}
    other = _apply(corp, "User", newcomer, Directory(newcomer))
    _apply(corp, "Group", group, Directory(newcomer, group))
    corp.remove("User", "h1", Previous(recorded, True))
    assert _entry(slapd, f"uid=gil.b,{PEOPLE}") is None
    assert _entry(slapd, other, "employeeNumber").employeeNumber.value == "h2"
    assert corp.read("Group")[f"cn=pair,{GROUPS}"]["member"] == [other.lower()]
    corp.remove("User", "h1", Previous(recorded, True))  # removing what is gone succeeds
    corp.close()


@pytest.mark.parametrize("on_delete", ["delete", "disable"])
def test_after_a_rename_it_was_never_told_removal_leaves_no_member_value_naming_the_old_dn(slapd, on_delete):
    corp = _connector(slapd.url, on_delete=on_delete, disable={"attribute": "employeeType", "value": "gone"})
    jo = _user(f"j-{on_delete}", f"jo-{on_delete}")
    group = {"id": f"g-{on_delete}", "displayName": f"band-{on_delete}",
             "members": [{"value": jo["id"], "type": "User"}]}
    directory = Directory(jo, group)
    recorded = _apply(corp, "User", jo, directory)
    _apply(corp, "Group", group, directory)
    _rename_behind_the_ledger(slapd, recorded, f"uid=jo.b-{on_delete}")
    corp.remove("User", jo["id"], Previous(recorded, True))
    renamed = f"uid=jo.b-{on_delete},{PEOPLE}"
    members = corp.read("Group")[f"cn=band-{on_delete},{GROUPS}"]["member"]
    if on_delete == "delete":  # the entry is gone, and its memberships by either name
        assert _entry(slapd, renamed) is None and members == []
    else:  # the disabled entry keeps its memberships, under the name it has
        assert _entry(slapd, renamed, "employeeType").employeeType.value == "gone" and members == [renamed]
    corp.close()


def test_removal_still_takes_the_recorded_entry_when_it_was_written_without_the_anchor(slapd):
    unanchored = _connector(slapd.url)
    del unanchored.mappings["User"].fields["employeeNumber"]
    dn = _apply(unanchored, "User", _user("i1", "ivy"), Directory())
    unanchored.close()
    corp = _connector(slapd.url)
    corp.remove("User", "i1", Previous(dn, True))
    assert _entry(slapd, dn) is None
    corp.close()


def test_removal_can_disable_by_attribute_or_move_the_entry(slapd):
    disabling = _connector(slapd.url, on_delete="disable", disable={"attribute": "employeeType", "value": "gone"})
    dn = _apply(disabling, "User", _user("c1", "carl"), Directory())
    disabling.remove("User", "c1", Previous(dn, True))
    assert _entry(slapd, dn, "employeeType").employeeType.value == "gone"
    assert disabling.is_removed("User", disabling.read("User")[dn.lower()])
    disabling.close()

    moving = _connector(slapd.url, on_delete="move", disabled_base=DISABLED)
    dn = _apply(moving, "User", _user("d1", "dora"), Directory())
    moving.remove("User", "d1", Previous(dn, True))
    assert _entry(slapd, dn) is None and _entry(slapd, f"uid=dora,{DISABLED}") is not None
    moving.close()


def test_data_the_directory_refuses_is_permanent_and_a_dead_server_is_retryable(slapd):
    corp = _connector(slapd.url)
    bad = {"id": "e1", "userName": "eve", "name": {"givenName": "Eve", "familyName": "X"}}
    corp.mappings["User"].fields["noSuchAttribute"] = FieldSource(path="userName")
    with pytest.raises(Rejected):
        _apply(corp, "User", bad, Directory())
    corp.close()
    dead = _connector(f"ldap://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable):
        _apply(dead, "User", bad, Directory())
