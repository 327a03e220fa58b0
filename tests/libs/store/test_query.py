"""filter_clause / sort_clause on both backends: every query Entra sends, every operator."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from libs.scim.errors import InvalidFilter
from libs.scim.filter import parse_filter
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, USERS, ResourceSchema
from libs.store.query import filter_clause, sort_clause
from libs.store.tables import members, resource_values, resources
from libs.store.values import flatten, fold

APP = "default"
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


# --- helpers shared with test_query_properties -----------------------------------------

def add_resource(conn: Any, schema: ResourceSchema, doc: dict[str, Any], *, app: str = APP,
                 created: datetime = T0, version: int = 1) -> int:
    """Insert one resource row and its value rows, as the directory store does."""
    name = doc["displayName"] if schema is GROUPS else doc["userName"]
    pk = conn.execute(insert(resources).values(
        app=app, resource_type=schema.name, id=doc["id"], external_id=doc.get("externalId"), name=name,
        name_key=fold(name), display_name=doc.get("displayName"),
        active=doc.get("active") if schema is USERS else None,
        created=created, last_modified=created + timedelta(hours=1), version=version, doc=json.dumps(doc),
    ).returning(resources.c.pk)).scalar_one()
    rows = flatten(doc, schema)
    if rows:
        conn.execute(insert(resource_values), [{"resource_pk": pk, **r} for r in rows])
    return pk


def add_member(conn: Any, group_pk: int, member_pk: int) -> None:
    conn.execute(insert(members).values(group_pk=group_pk, member_pk=member_pk))


def query_ids(engine: Engine, text: str, schema: ResourceSchema = USERS, app: str = APP) -> set[str]:
    stmt = select(resources.c.id).where(resources.c.app == app, resources.c.resource_type == schema.name,
                                        filter_clause(parse_filter(text), schema))
    with engine.connect() as conn:
        return set(conn.execute(stmt).scalars())


def sorted_ids(engine: Engine, sort_by: str, descending: bool = False, schema: ResourceSchema = USERS) -> list[str]:
    stmt = (select(resources.c.id).where(resources.c.app == APP, resources.c.resource_type == schema.name)
            .order_by(*sort_clause(sort_by, descending, schema)))
    with engine.connect() as conn:
        return list(conn.execute(stmt).scalars())


def check(engine: Engine, cases: list[tuple[str, set[str]]], schema: ResourceSchema = USERS) -> None:
    failures = []
    for text, expected in cases:
        got = query_ids(engine, text, schema)
        if got != expected:
            failures.append(f"{text}: got {sorted(got)}, expected {sorted(expected)}")
    assert not failures, "\n".join(failures)


# --- the directory -----------------------------------------------------------------------

EXT = ENTERPRISE_USER
USERS_DOCS = [
    {"id": "u1", "userName": "Alice@Example.com", "externalId": "EXT-1", "displayName": "Alice Ärger",
     "title": "Engineer", "active": True, "nickName": "Al",
     "name": {"givenName": "Alice", "familyName": "Smith"},
     "emails": [{"value": "alice@work.com", "type": "work", "primary": True},
                {"value": "Alice@Home.com", "type": "home"}],
     EXT: {"manager": {"value": "u2"}, "employeeNumber": "100", "department": "R&D"}},
    {"id": "u2", "userName": "bob", "externalId": "ext-1", "displayName": "Bob", "title": "Manager",
     "active": False,
     "emails": [{"value": "bob@work.com", "type": "home"}, {"value": "bob@home.com", "type": "work"}],
     EXT: {"manager": {"value": "U1"}}},
    {"id": "u3", "userName": "Élodie", "displayName": "ÉLODIE Ünal", "title": "50% off_sale",
     "emails": [{"value": "100%_done@x.com", "type": "work"}], "nickName": "a_b%c!d\\e"},
    {"id": "u4", "userName": "carol", "title": "engineer", "active": True, "emails": [],
     "nickName": "' OR 1=1 --", "userType": ""},
    {"id": "u5", "userName": "dave_", "externalId": "X%", "title": "Senior Engineer", "active": True,
     "emails": [{"value": "dave@work.com", "type": "WORK"}], "locale": "de-DE"},
]
GROUP_DOCS = [
    {"id": "g1", "displayName": "Admins", "externalId": "G-1"},
    {"id": "g2", "displayName": "Sales Ü"},
    {"id": "g3", "displayName": "ADMINS-old"},
]
MEMBERSHIP = {"g1": ["u1", "u2"], "g2": ["u3", "g3"], "g3": []}
ALL_USERS = {d["id"] for d in USERS_DOCS}
ALL_GROUPS = {d["id"] for d in GROUP_DOCS}


@pytest.fixture
def directory(engine: Engine) -> Engine:
    pks: dict[str, int] = {}
    with engine.begin() as conn:
        for i, doc in enumerate(USERS_DOCS):
            pks[doc["id"]] = add_resource(conn, USERS, doc, created=T0 + timedelta(days=i), version=i + 1)
        for i, doc in enumerate(GROUP_DOCS):
            pks[doc["id"]] = add_resource(conn, GROUPS, doc, created=T0 + timedelta(days=i))
        for group, ids in MEMBERSHIP.items():
            for member in ids:
                add_member(conn, pks[group], pks[member])
        # Another app with a same-named user: never leaks into APP's results.
        add_resource(conn, USERS, {"id": "other", "userName": "bob", "title": "Engineer"}, app="other")
    return engine


pytestmark = pytest.mark.db


def test_entra_queries(directory):
    check(directory, [
        ('userName eq "alice@example.com"', {"u1"}),
        ('userName eq "ALICE@EXAMPLE.COM"', {"u1"}),
        ('USERNAME EQ "Alice@Example.com"', {"u1"}),
        ('urn:ietf:params:scim:schemas:core:2.0:User:userName eq "BOB"', {"u2"}),
        ('userName eq "élodie"', {"u3"}),
        ('userName eq "ÉLODIE"', {"u3"}),
        ('userName eq "nobody"', set()),
        ('externalId eq "EXT-1"', {"u1"}),
        ('externalId eq "ext-1"', {"u2"}),
        ('externalId eq "Ext-1"', set()),
        ('externalid eq "X%"', {"u5"}),
        ('emails[type eq "work"].value eq "alice@work.com"', {"u1"}),
        ('emails[type eq "work"].value eq "ALICE@WORK.COM"', {"u1"}),
        ('emails[type eq "work"].value eq "bob@work.com"', set()),  # bob's work address is another element
        ('emails[type eq "work"].value eq "bob@home.com"', {"u2"}),
        ('emails[type eq "work"].value eq "dave@work.com"', {"u5"}),  # type is caseExact false
        ('emails[type eq "work" and value eq "alice@home.com"]', set()),
        ('emails[type eq "home" and value eq "alice@home.com"]', {"u1"}),
        ('id eq "u1" and urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager eq "u2"', {"u1"}),
        ('id eq "u1" and manager eq "u2"', {"u1"}),
        ('id eq "u1" and manager eq "U2"', set()),  # manager.value is caseExact
        ('id eq "u2" and manager eq "U1"', {"u2"}),
        ('id eq "u1" and manager.value eq "u3"', set()),
        ('id eq "U1"', set()),
        ('externalId eq jyoung', set()),
    ])
    check(directory, [
        ('displayName eq "admins"', {"g1"}),
        ('displayName eq "ADMINS"', {"g1"}),
        ('DisplayName eq "sales ü"', {"g2"}),
        ('id eq "g1" and members eq "u1"', {"g1"}),
        ('id eq "g1" and members eq "u3"', set()),
        ('id eq "g1" and members.value eq "u2"', {"g1"}),
        ('members eq "g3"', {"g2"}),
        ('members eq "U1"', set()),
        ('externalId eq "G-1"', {"g1"}),
    ], GROUPS)


def test_string_operators_and_case(directory):
    check(directory, [
        ('title eq "engineer"', {"u1", "u4"}),
        ('title eq "ENGINEER"', {"u1", "u4"}),
        ('title ne "engineer"', {"u2", "u3", "u5"}),
        ('title co "ENGINEER"', {"u1", "u4", "u5"}),
        ('title sw "eng"', {"u1", "u4"}),
        ('title ew "NEER"', {"u1", "u4", "u5"}),
        ('title co ""', ALL_USERS),
        ('title gt "manager"', {"u5"}),
        ('title ge "manager"', {"u2", "u5"}),
        ('title lt "engineer"', {"u3"}),
        ('title le "engineer"', {"u1", "u3", "u4"}),
        ('title pr', ALL_USERS),
        ('userType pr', set()),  # an empty string is not a value
        ('userType eq ""', set()),  # "" is unassigned (RFC 7643 §2.5), as in evaluate
        ('nickName pr', {"u1", "u3", "u4"}),
        ('displayName eq "alice ärger"', {"u1"}),  # User displayName: caseExact false, non-ASCII folded
        ('displayName eq "élodie ünal"', {"u3"}),
        ('displayName sw "ÉLO"', {"u3"}),
        ('displayName co "ÄRG"', {"u1"}),
        ('userName co "LIC"', {"u1"}),
        ('userName sw "É"', {"u3"}),
        ('userName ew "_"', {"u5"}),
        ('userName gt "carol"', {"u3", "u5"}),
        ('userName le "bob"', {"u1", "u2"}),
        ('userName pr', ALL_USERS),
        ('externalId sw "ext"', {"u2"}),
        ('externalId sw "EXT"', {"u1"}),
        ('externalId co "T-"', {"u1"}),
        ('externalId ew "-1"', {"u1", "u2"}),
        ('externalId gt "Z"', {"u2"}),
        ('externalId pr', {"u1", "u2", "u5"}),
        ('externalId ne "EXT-1"', ALL_USERS - {"u1"}),
        ('id co "u"', ALL_USERS),
        ('id ge "u4"', {"u4", "u5"}),
        ('locale eq "DE-de"', {"u5"}),
        ('emails eq "ALICE@work.com"', {"u1"}),
        ('emails.value ew "@home.com"', {"u1", "u2"}),
        ('emails.type eq "work" and emails.value eq "bob@work.com"', {"u2"}),  # not element-wise
        ('emails pr', {"u1", "u2", "u3", "u5"}),
        ('emails.primary eq true', {"u1"}),
        ('emails.primary ne true', ALL_USERS - {"u1"}),
        ('name pr', {"u1"}),
        ('name.givenName eq "ALICE"', {"u1"}),
        ('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq "100"', {"u1"}),
        ('urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "r&d"', {"u1"}),
        ('manager pr', {"u1", "u2"}),
        ('manager.value eq "u2"', {"u1"}),
        ('manager eq null', {"u3", "u4", "u5"}),
        ('manager ne null', {"u1", "u2"}),
        ('title eq null', set()),
    ])


def test_like_wildcards_and_injection_are_literal(directory):
    check(directory, [
        ('title co "%"', {"u3"}),
        ('title co "_"', {"u3"}),
        ('title co "0% off_"', {"u3"}),
        ('title sw "_"', set()),
        ('title sw "%"', set()),
        ('title ew "%"', set()),
        ('emails.value sw "100%_"', {"u3"}),
        ('emails.value sw "100%x"', set()),
        ('nickName co "!"', {"u3"}),
        ('nickName co "!d"', {"u3"}),
        ('nickName co "\\\\e"', {"u3"}),
        ('nickName co "b%c!d\\\\"', {"u3"}),
        ('nickName ew "_b"', set()),
        ('externalId eq "X%"', {"u5"}),
        ('externalId sw "X"', {"u5"}),
        ('externalId eq "X_"', set()),
        ('externalId co "%"', {"u5"}),
        ('userName ew "E_"', {"u5"}),
        ('userName co "%"', set()),
        ('nickName eq "\' OR 1=1 --"', {"u4"}),
        ('userName eq "x\\" or \\"1\\"=\\"1"', set()),
        ('userName eq "\'; DROP TABLE resources; --"', set()),
        ('title co "\' OR \'1\'=\'1"', set()),
        ('externalId eq "1 OR 1=1"', set()),
    ])
    assert query_ids(directory, "userName pr") == ALL_USERS  # the table is still there


def test_boolean_number_date_and_meta(directory):
    check(directory, [
        ('active eq true', {"u1", "u4", "u5"}),
        ('active eq false', {"u2"}),
        ('active ne true', {"u2", "u3"}),
        ('active ne false', {"u1", "u3", "u4", "u5"}),
        ('not (active eq true)', {"u2", "u3"}),
        ('active pr', {"u1", "u2", "u4", "u5"}),
        # a value of the wrong JSON type compares False (as libs.scim.evaluate), not an error
        ('active eq "True"', set()),
        ('active ne "True"', ALL_USERS),
        ('title eq 5', set()),
        ('title ne 5', ALL_USERS),
        ('externalId eq 12345', set()),
        ('emails.primary eq "true"', set()),
        ('title gt null', set()),
        ('title co null', set()),
        ('emails[value sw null]', set()),
        ('meta.version eq "abc"', set()),
        ('meta.created gt "2024-01-02T00:00:00Z"', {"u3", "u4", "u5"}),
        ('meta.created ge "2024-01-02T00:00:00Z"', {"u2", "u3", "u4", "u5"}),
        ('meta.created ge "2024-01-02T01:00:00+01:00"', {"u2", "u3", "u4", "u5"}),
        ('meta.created lt "2024-01-02T00:00:00.000001Z"', {"u1", "u2"}),
        ('meta.created eq "2024-01-01T00:00:00Z"', {"u1"}),
        ('meta.created ne "2024-01-01T00:00:00Z"', ALL_USERS - {"u1"}),
        ('meta.lastModified le "2024-01-01T01:00:00Z"', {"u1"}),
        ('meta.created pr', ALL_USERS),
        ('meta.resourceType eq "User"', ALL_USERS),
        ('meta.resourceType eq "Group"', set()),
        ('meta.version eq "W/\\"3\\""', {"u3"}),
        ('meta.version eq 2', {"u2"}),
        ('meta.version ne "4"', ALL_USERS - {"u4"}),
    ])


def test_logic_and_missing_values(directory):
    check(directory, [
        ('not (title eq "engineer")', {"u2", "u3", "u5"}),
        ('not (nickName eq "al")', ALL_USERS - {"u1"}),
        ('nickName ne "al"', ALL_USERS - {"u1"}),
        ('not (externalId eq "EXT-1")', ALL_USERS - {"u1"}),
        ('not (nickName pr)', {"u2", "u5"}),
        ('not (not (nickName pr))', {"u1", "u3", "u4"}),
        ('nickName gt "a" or not (locale pr)', {"u1", "u2", "u3", "u4"}),
        ('title eq "engineer" or userName eq "bob"', {"u1", "u2", "u4"}),
        ('title eq "engineer" and active eq true', {"u1", "u4"}),
        ('(title eq "engineer" or title eq "manager") and not (active eq false)', {"u1", "u4"}),
        ('title eq "manager" or title eq "engineer" and active eq false', {"u2"}),
        ('emails[not (type eq "work")]', {"u1", "u2"}),  # u5's "WORK" is "work"
        ('emails[type eq "work" or value ew "home.com"]', {"u1", "u2", "u3", "u5"}),
        ('emails[not (type eq "home") and value co "work"]', {"u1", "u5"}),
        ('emails[type ne "work"]', {"u1", "u2"}),
        ('emails[primary pr]', {"u1"}),
        ('emails[not (primary pr) and type eq "work"]', {"u2", "u3", "u5"}),
        ('emails[type eq null and value pr]', set()),
        ('not (emails[type eq "work"])', {"u4"}),
        ('name[givenName sw "a" and familyName eq "smith"]', {"u1"}),
        ('name[givenName sw "a" and familyName eq "jones"]', set()),
    ])


def test_membership(directory):
    check(directory, [
        ('members pr', {"g1", "g2"}),
        ('not (members pr)', {"g3"}),
        ('members ne "u1"', {"g2", "g3"}),
        ('members[value eq "u3"]', {"g2"}),
        ('members[type eq "group"]', {"g2"}),
        ('members[type eq "User" and value eq "g3"]', set()),
        ('members[not (value eq "u1")]', {"g1", "g2"}),
        ('members.type eq "User"', {"g1", "g2"}),
        ('members.value sw "u"', {"g1", "g2"}),
        ('displayName sw "ADMIN"', {"g1", "g3"}),
        ('displayName co "ü"', {"g2"}),
        ('displayName ew "-OLD"', {"g3"}),
    ], GROUPS)
    check(directory, [
        ('groups eq "g1"', {"u1", "u2"}),
        ('groups.value eq "g2"', {"u3"}),
        ('groups.display eq "SALES ü"', {"u3"}),
        ('groups pr', {"u1", "u2", "u3"}),
        ('not (groups pr)', {"u4", "u5"}),
        ('groups[value eq "g1" or display eq "sales ü"]', {"u1", "u2", "u3"}),
    ])


@pytest.mark.parametrize("text", [
    'nosuch eq "x"', 'name.nosuch eq "x"', 'emails.nosuch eq "x"', 'urn:x:y:nosuch eq "x"',
    'password eq "x"', 'password pr', 'x509Certificates.value eq "x"', 'x509Certificates eq "x"',
    'name eq "x"', 'addresses eq "x"', 'active gt true', 'active co "t"', 'emails.primary sw "t"',
    'meta.created eq "yesterday"', 'meta.created co "2024"', 'meta.location eq "x"', 'meta eq "x"',
    'meta.version gt "1"', 'emails[nosuch eq "x"]', 'emails[emails.value eq "x"]',
    'userName.sub eq "x"',  'title[value eq "x"]', 'active gt null', 'groups.type eq "direct"',
    'members eq "x"',  # a User has no members
    'emails.value[value eq "x"]', 'emails[value eq "x" and emails[value eq "y"]]',
])
def test_unknown_or_unsupported_is_invalid_filter(text):
    with pytest.raises(InvalidFilter):
        filter_clause(parse_filter(text), USERS)


@pytest.mark.parametrize("text", ['title eq "x"', 'groups eq "g1"', 'members.display eq "x"',
                                  'members[$ref eq "x"]', 'active eq true', 'userName eq "x"'])
def test_group_unknowns_are_invalid_filter(text):
    with pytest.raises(InvalidFilter):
        filter_clause(parse_filter(text), GROUPS)


def test_sort(directory):
    assert sorted_ids(directory, "userName") == ["u1", "u2", "u4", "u5", "u3"]
    assert sorted_ids(directory, "USERNAME", True) == ["u3", "u5", "u4", "u2", "u1"]
    assert sorted_ids(directory, "title") == ["u3", "u1", "u4", "u2", "u5"]  # u1/u4 tie → pk
    assert sorted_ids(directory, "title", True) == ["u5", "u2", "u1", "u4", "u3"]
    # missing values last ascending, first descending (RFC 7644 §3.4.2.3)
    assert sorted_ids(directory, "externalId") == ["u1", "u5", "u2", "u3", "u4"]
    assert sorted_ids(directory, "externalId", True) == ["u3", "u4", "u2", "u5", "u1"]
    assert sorted_ids(directory, "nickName") == ["u4", "u3", "u1", "u2", "u5"]
    assert sorted_ids(directory, "emails") == ["u3", "u1", "u2", "u5", "u4"]
    assert sorted_ids(directory, "emails.type", True) == ["u4", "u3", "u5", "u1", "u2"]
    assert sorted_ids(directory, "active") == ["u2", "u1", "u4", "u5", "u3"]
    assert sorted_ids(directory, "meta.created", True) == ["u5", "u4", "u3", "u2", "u1"]
    assert sorted_ids(directory, "displayName") == ["u1", "u2", "u3", "u4", "u5"]
    assert sorted_ids(directory, "manager") == ["u2", "u1", "u3", "u4", "u5"]
    assert sorted_ids(directory, "") == ["u1", "u2", "u3", "u4", "u5"]
    assert sorted_ids(directory, "displayName", schema=GROUPS) == ["g1", "g3", "g2"]
    for bad in ("nosuch", "password", "groups", "name", "meta.location", "addresses"):
        with pytest.raises(InvalidFilter):
            sort_clause(bad, False, USERS)
    with pytest.raises(InvalidFilter):
        sort_clause("members", False, GROUPS)


def test_entra_queries_use_the_indexes(engine):
    """The value lookups Entra sends are driven by the (path, ci_key) / (app, type, id) indexes."""
    if engine.dialect.name != "sqlite":
        pytest.skip("EXPLAIN QUERY PLAN is SQLite's; PostgreSQL plans by statistics")
    cases = [('emails[type eq "work"].value eq "x"', USERS, "ix_resource_values_path_ci_key (path=? AND ci_key=?)"),
             ('id eq "u1" and manager eq "u2"', USERS, "ix_resource_values_path_ci_key (path=? AND ci_key=?)"),
             ('title eq "x"', USERS, "ix_resource_values_path_ci_key (path=? AND ci_key=?)"),
             ('id eq "g" and members eq "u"', GROUPS, "(app=? AND resource_type=? AND id=?)")]
    for text, schema, expected in cases:
        stmt = select(resources.c.id).where(resources.c.app == APP, resources.c.resource_type == schema.name,
                                            filter_clause(parse_filter(text), schema))
        sql = str(stmt.compile(engine, compile_kwargs={"literal_binds": True}))
        with engine.connect() as conn:
            plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
        assert expected in plan and "SCAN" not in plan, (text, plan)
