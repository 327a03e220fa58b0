"""The LDAP connector against a real slapd: DN templates, renames, member DNs, removal modes;
certificate verification, StartTLS and the refusal of clear-text binds; entries that are not
ours; RFC 4518 matching; directory scale (paged searches past the server's size limit)."""

from __future__ import annotations

import tomllib
import uuid

import pytest

from libs.connectors.base import Previous
from libs.connectors.errors import Conflict, Rejected, Unavailable
from libs.connectors.ldapprep import dn_key
from libs.connectors.mapping import FieldSource, MappingError
from libs.connectors.registry import build_connector
from tests.support.ldap import SIZE_LIMIT, SUFFIX, ldap_connector_toml, slapd_server
from tests.support.servers import free_port

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)

PEOPLE, GROUPS, DISABLED = f"ou=people,{SUFFIX}", f"ou=groups,{SUFFIX}", f"ou=disabled,{SUFFIX}"


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    with slapd_server(tmp_path_factory.mktemp("slapd")) as server:
        yield server


def _connector(url: str, tls: str = "allow_insecure = true", **users_options):
    spec = tomllib.loads(ldap_connector_toml("corp", url, tls=tls))["connectors"]["corp"]
    spec["users"].update(users_options)
    return build_connector("corp", spec)


def _id(label: str) -> str:
    """A scimbus id (a UUID) per label, the same within a run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"scimbus-test:{label}"))


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


def _user(label: str, name: str, manager: str | None = None) -> dict:
    doc = {"id": _id(label), "userName": name, "name": {"givenName": "Ada", "familyName": "Lovelace"}}
    if manager:
        doc["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"] = {"manager": {"value": _id(manager)}}
    return doc


def _group(label: str, name: str, *members: str) -> dict:
    return {"id": _id(label), "displayName": name, "members": [{"value": _id(m), "type": "User"} for m in members]}


def test_a_rename_moves_the_entry_and_rewrites_member_and_manager_dns(slapd):
    corp = _connector(slapd.url)
    boss, ada = _user("b1", "boss"), _user("a1", "ada", manager="b1")
    group = _group("g1", "team", "a1")
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
    corp.remove("User", _id("a1"), Previous(new, True))
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
    group = _group("g2", "crew", "f1")
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
    group = _group("g3", "pair", "h2")
    other = _apply(corp, "User", newcomer, Directory(newcomer))
    _apply(corp, "Group", group, Directory(newcomer, group))
    corp.remove("User", _id("h1"), Previous(recorded, True))
    assert _entry(slapd, f"uid=gil.b,{PEOPLE}") is None
    assert _entry(slapd, other, "employeeNumber").employeeNumber.value == _id("h2")
    assert corp.read("Group")[f"cn=pair,{GROUPS}"]["member"] == [other.lower()]
    corp.remove("User", _id("h1"), Previous(recorded, True))  # removing what is gone succeeds
    corp.close()


@pytest.mark.parametrize("on_delete", ["delete", "disable"])
def test_after_a_rename_it_was_never_told_removal_leaves_no_member_value_naming_the_old_dn(slapd, on_delete):
    corp = _connector(slapd.url, on_delete=on_delete, disable={"attribute": "employeeType", "value": "gone"})
    jo = _user(f"j-{on_delete}", f"jo-{on_delete}")
    group = _group(f"g-{on_delete}", f"band-{on_delete}", f"j-{on_delete}")
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


def test_removal_leaves_an_entry_without_our_anchor_at_the_recorded_dn_and_says_why(slapd):
    """Written by hand, by another system, or by us before the anchor was mapped: not ours to delete."""
    dn = f"uid=ivy,{PEOPLE}"
    admin = slapd.connection()
    assert admin.add(dn, ["inetOrgPerson"], {"uid": "ivy", "cn": "Ivy", "sn": "I"})
    admin.unbind()
    corp = _connector(slapd.url)
    with pytest.raises(Conflict, match="does not carry the anchor employeeNumber"):
        corp.remove("User", _id("i1"), Previous(dn, True))
    assert _entry(slapd, dn) is not None
    corp.close()


def test_removal_can_disable_by_attribute_or_move_the_entry(slapd):
    disabling = _connector(slapd.url, on_delete="disable", disable={"attribute": "employeeType", "value": "gone"})
    dn = _apply(disabling, "User", _user("c1", "carl"), Directory())
    disabling.remove("User", _id("c1"), Previous(dn, True))
    assert _entry(slapd, dn, "employeeType").employeeType.value == "gone"
    assert disabling.is_removed("User", disabling.read("User")[dn_key(dn)])
    disabling.close()

    moving = _connector(slapd.url, on_delete="move", disabled_base=DISABLED)
    dn = _apply(moving, "User", _user("d1", "dora"), Directory())
    moving.remove("User", _id("d1"), Previous(dn, True))
    assert _entry(slapd, dn) is None and _entry(slapd, f"uid=dora,{DISABLED}") is not None
    moving.close()


def test_data_the_directory_refuses_is_permanent_and_a_dead_server_is_retryable(slapd):
    corp = _connector(slapd.url)
    bad = _user("e1", "eve")
    corp.mappings["User"].fields["noSuchAttribute"] = FieldSource(path="userName")
    with pytest.raises(Rejected):
        _apply(corp, "User", bad, Directory())
    corp.close()
    dead = _connector(f"ldap://127.0.0.1:{free_port()}")
    with pytest.raises(Unavailable):
        _apply(dead, "User", bad, Directory())


# --------------------------------------------------------------------------- transport security

def test_a_bind_to_a_server_whose_certificate_an_untrusted_ca_signed_fails(slapd):
    """The man in the middle: a server presenting a certificate the connector has no reason to
    trust gets no bind (and so no password), over ldaps:// and over StartTLS, whether the
    connector trusts another CA or only the system's."""
    for url, tls in ((slapd.ldaps_url, f'ca_file = "{slapd.untrusted_ca_file}"'),
                     (slapd.url, f'start_tls = true\nca_file = "{slapd.untrusted_ca_file}"'),
                     (slapd.ldaps_url, ""), (slapd.url, "start_tls = true")):
        corp = _connector(url, tls=tls)
        with pytest.raises(Unavailable, match="certificate"):
            _apply(corp, "User", _user("t1", "tess"), Directory())
        corp.close()
    assert _entry(slapd, f"uid=tess,{PEOPLE}") is None


def test_over_ldaps_or_starttls_with_the_servers_ca_the_connector_binds_and_writes(slapd):
    for label, url, tls in (("t2", slapd.ldaps_url, f'ca_file = "{slapd.ca_file}"'),
                            ("t3", slapd.url, f'start_tls = true\nca_file = "{slapd.ca_file}"')):
        corp = _connector(url, tls=tls)
        dn = _apply(corp, "User", _user(label, f"tls-{label}"), Directory())
        assert corp.conn.server.ssl or corp.conn.tls_started
        assert _entry(slapd, dn, "employeeNumber").employeeNumber.value == _id(label)
        corp.close()


def test_a_simple_bind_in_clear_is_refused_when_the_config_loads_unless_allow_insecure(slapd):
    with pytest.raises(MappingError, match="sends the password in clear"):
        _connector(slapd.url, tls="")
    with pytest.raises(MappingError, match="start_tls goes with an ldap:// URL"):
        _connector(slapd.ldaps_url, tls="start_tls = true")
    with pytest.raises(MappingError, match="ca_file"):
        _connector(slapd.ldaps_url, tls='ca_file = "/nonexistent/ca.pem"')
    corp = _connector(slapd.url, tls="allow_insecure = true")  # said on purpose: a trusted network
    assert _apply(corp, "User", _user("t4", "plain"), Directory())
    corp.close()


# --------------------------------------------------------------------------- entries that are not ours

def _foreign(slapd, dn: str, **attrs) -> None:
    admin = slapd.connection()
    assert admin.add(dn, ["inetOrgPerson"], {"cn": "Not Ours", "sn": "Foreign", **attrs}), admin.result
    admin.unbind()


@pytest.mark.parametrize("user_name", ["root", "ｒｏｏｔ", "ROOT", " root "], ids=["same", "fullwidth", "case", "spaces"])
def test_an_entry_that_holds_a_users_dn_without_our_anchor_is_never_overwritten(slapd, user_name):
    """The directory takes ``uid=ｒｏｏｔ`` for ``uid=root`` (RFC 4518): before, the connector
    met ALREADY_EXISTS and overwrote the entry it does not own."""
    if _entry(slapd, f"uid=root,{PEOPLE}") is None:
        _foreign(slapd, f"uid=root,{PEOPLE}", uid="root", employeeNumber="1001")
    corp = _connector(slapd.url)
    with pytest.raises(Conflict, match="is not ours: its employeeNumber is 1001"):
        _apply(corp, "User", _user(f"r-{user_name}", user_name), Directory())
    entry = _entry(slapd, f"uid=root,{PEOPLE}", "cn", "employeeNumber")
    assert (entry.cn.value, entry.employeeNumber.value) == ("Not Ours", "1001")
    corp.close()


def test_resync_adopt_takes_over_an_entry_that_holds_the_users_dn(slapd):
    _foreign(slapd, f"uid=ulla,{PEOPLE}", uid="ulla")
    corp = _connector(slapd.url)
    ulla = _user("u1", "ulla")
    with pytest.raises(Conflict, match="its employeeNumber is empty"):
        _apply(corp, "User", ulla, Directory())
    fields = corp.render("User", ulla, Directory())
    assert corp.apply("User", ulla, fields, Previous(None, False, adopt=True), Directory())
    assert _entry(slapd, f"uid=ulla,{PEOPLE}", "employeeNumber").employeeNumber.value == _id("u1")
    corp.close()


def test_a_rename_rewrites_member_values_only_in_groups_that_are_scimbus_groups(slapd):
    corp = _connector(slapd.url)
    vic = _user("v1", "vic")
    ours = _group("gv", "vic-team", "v1")
    directory = Directory(vic, ours)
    old = _apply(corp, "User", vic, directory)
    _apply(corp, "Group", ours, directory)
    admin = slapd.connection()
    theirs = f"cn=their-team,{GROUPS}"
    assert admin.add(theirs, ["groupOfNames"], {"cn": "their-team", "member": [old], "businessCategory": "sales"})
    admin.unbind()
    vic["userName"] = "victor"
    new = _apply(corp, "User", vic, directory, Previous(old, True))
    assert _entry(slapd, f"cn=vic-team,{GROUPS}", "member").member.values == [new]
    assert _entry(slapd, theirs, "member").member.values == [old]  # not ours: left as its owner keeps it
    corp.close()


def test_dn_keys_agree_with_the_directorys_own_matching(slapd):
    """For each pair of spellings, slapd says whether they name one entry (the second add
    answers ALREADY_EXISTS); ``dn_key`` must say the same."""
    pairs = [("Zoë", "ZOË"), ("ｚｏｅ", "zoe"), ("zoe  smith", "zoe smith"), ("zoe\u00a0doe", "zoe doe"),
             ("ﬁona", "fiona"), ("zoe", "zoë"), ("zoe-smith", "zoesmith"), ("ǆ", "Ǆ")]
    admin = slapd.connection()
    for n, (first, second) in enumerate(pairs):
        base = f"ou=match{n},{SUFFIX}"
        assert admin.add(base, ["organizationalUnit"], {"ou": f"match{n}"})
        assert admin.add(f"cn={first},{base}", ["organizationalRole"], {"cn": first}), admin.result
        same_for_slapd = not admin.add(f"cn={second},{base}", ["organizationalRole"], {"cn": second})
        assert same_for_slapd == (dn_key(f"cn={first},{base}") == dn_key(f"cn={second},{base}")), (first, second)
    admin.unbind()


# --------------------------------------------------------------------------- directory scale

def test_reads_and_member_rewrites_go_past_the_servers_size_limit(slapd):
    """500 users and a 500-member group, five times the service account's size limit: read
    returns every entry (paged), and a rename rewrites the member value in the group."""
    spec = tomllib.loads(ldap_connector_toml("big", slapd.url, people="bigpeople", groups="biggroups")
                         )["connectors"]["big"]
    big = build_connector("big", spec)
    admin = slapd.connection()
    for ou in ("bigpeople", "biggroups"):
        admin.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
    admin.unbind()
    users = [_user(f"big-{n}", f"big.{n}") for n in range(5 * SIZE_LIMIT)]
    group = {"id": _id("big-group"), "displayName": "everyone",
             "members": [{"value": u["id"], "type": "User"} for u in users]}
    directory = Directory(*users, group)
    for user in users:
        _apply(big, "User", user, directory)
    group_dn = _apply(big, "Group", group, directory)
    held = big.read("User")
    assert len(held) == len(users)
    assert len(big.read("Group")[dn_key(group_dn)]["member"]) == len(users)

    renamed = users[-1]
    old = big.dn("User", big.render("User", renamed, directory))
    renamed["userName"] = "big.renamed"
    new = _apply(big, "User", renamed, directory, Previous(old, True))
    members = big.read("Group")[dn_key(group_dn)]["member"]
    assert dn_key(new) in members and dn_key(old) not in members and len(members) == len(users)
    big.close()


def test_a_member_attribute_handed_out_in_ranges_is_read_to_its_end(slapd):
    """Active Directory answers ``member;range=0-1499`` past 1,500 values; here a relay does the
    same past 100 in front of slapd, and the group's 250 members still read back whole."""
    from tests.support.relay import RangingRelay

    corp = _connector(slapd.url)
    users = [_user(f"rng-{n}", f"rng.{n}") for n in range(250)]
    group = {"id": _id("rng-group"), "displayName": "ranged", "members": [{"value": u["id"], "type": "User"}
                                                                          for u in users]}
    directory = Directory(*users, group)
    for user in users:
        _apply(corp, "User", user, directory)
    dn = _apply(corp, "Group", group, directory)
    corp.close()
    with RangingRelay(slapd.port, size=100) as relay:
        ranged = _connector(f"ldap://127.0.0.1:{relay.port}")
        members = ranged.read("Group")[dn_key(dn)]["member"]
        ranged.close()
    assert relay.ranged >= 3  # 0-99, 100-199, 200-*
    assert sorted(members) == sorted(dn_key(ranged.dn("User", ranged.render("User", u, directory))) for u in users)
