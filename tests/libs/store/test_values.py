"""flatten(): one resource_values row per leaf value, keyed by canonical lower-cased path."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from libs.scim.schemas import ENTERPRISE_USER, GROUPS, USERS
from libs.store.tables import KEY_PREFIX, resource_values
from libs.store.values import flatten, fold


def rows_by_path(rows: list[dict]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    for r in rows:
        out.setdefault(r["path"], []).append((r["ordinal"], r["str_value"], r["num_value"]))
    return out


def test_flatten_full_user():
    doc = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", ENTERPRISE_USER],
        "id": "abc", "externalId": "E1", "userName": "Alice@Example.com", "displayName": "Alice Ärger",
        "active": True, "password": "secret", "title": "Engineer",
        "meta": {"resourceType": "User"},
        "name": {"givenName": "Alice", "familyName": "Smith", "bogus": "x"},
        "emails": [{"value": "A@Work.com", "type": "work", "primary": True}, {"value": "a@home.com", "type": "home"}],
        "x509Certificates": [{"value": "TUlJ", "display": "cert"}],
        "groups": [{"value": "g1"}],
        "unknownAttr": "ignored",
        ENTERPRISE_USER: {"employeeNumber": "42", "manager": {"value": "M-1", "displayName": "Boss"}},
    }
    rows = flatten(doc, USERS)
    by = rows_by_path(rows)
    assert by == {
        "displayname": [(0, "Alice Ärger", None)],
        "title": [(0, "Engineer", None)],
        "name.givenname": [(0, "Alice", None)],
        "name.familyname": [(0, "Smith", None)],
        "emails.value": [(0, "A@Work.com", None), (1, "a@home.com", None)],
        "emails.type": [(0, "work", None), (1, "home", None)],
        "emails.primary": [(0, "true", 1.0)],
        "x509certificates.display": [(0, "cert", None)],
        f"{ENTERPRISE_USER.lower()}:employeenumber": [(0, "42", None)],
        f"{ENTERPRISE_USER.lower()}:manager.value": [(0, "M-1", None)],
        f"{ENTERPRISE_USER.lower()}:manager.displayname": [(0, "Boss", None)],
    }
    for r in rows:
        assert r["ci_value"] == fold(r["str_value"])
        assert r["ci_key"] == r["ci_value"][:KEY_PREFIX]
        assert set(r) == {"path", "ordinal", "str_value", "ci_value", "ci_key", "num_value"}


def test_flatten_skips_columns_and_membership_of_groups():
    doc = {"schemas": [], "displayName": "Admins", "externalId": "x", "members": [{"value": "u1"}]}
    assert flatten(doc, GROUPS) == []


def test_flatten_lenient_forms():
    doc = {
        "userName": "u", "emails": ["Bare@x.com", None, {"value": None, "type": "work"}],
        ENTERPRISE_USER.upper(): {"Manager": "boss-id"},
        "EMAILS_not": 1,
        "nickName": None,
        "phoneNumbers": {"value": "+1"},  # a single object for a multi-valued attribute
        "addresses": [{"primary": "True", "locality": "Köln"}],
    }
    by = rows_by_path(flatten(doc, USERS))
    assert by["emails.value"] == [(0, "Bare@x.com", None)]
    assert by["emails.type"] == [(2, "work", None)]
    assert by[f"{ENTERPRISE_USER.lower()}:manager.value"] == [(0, "boss-id", None)]
    assert by["phonenumbers.value"] == [(0, "+1", None)]
    assert by["addresses.primary"] == [(0, "true", 1.0)]
    assert by["addresses.locality"] == [(0, "Köln", None)]
    assert "nickname" not in by


def test_flatten_folds_non_ascii_and_truncates_key():
    long = "Ä" * (KEY_PREFIX + 10)
    rows = flatten({"userName": "u", "title": long, "nickName": "İSTANBUL"}, USERS)
    title = next(r for r in rows if r["path"] == "title")
    assert title["ci_value"] == "ä" * (KEY_PREFIX + 10)
    assert title["ci_key"] == "ä" * KEY_PREFIX
    nick = next(r for r in rows if r["path"] == "nickname")
    assert nick["ci_value"] == "İSTANBUL".lower()


@pytest.mark.db
def test_rows_fit_the_table(engine):
    from libs.store.tables import resources
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        pk = conn.execute(insert(resources).values(
            app="a", resource_type="User", id="1", name="u", name_key="u", created=now, last_modified=now,
            version=1, doc="{}").returning(resources.c.pk)).scalar_one()
        rows = flatten({"userName": "u", "title": "T" * 5000, "emails": [{"value": "x", "primary": False}]}, USERS)
        conn.execute(insert(resource_values), [{"resource_pk": pk, **r} for r in rows])
        got = conn.execute(select(resource_values.c.path, resource_values.c.num_value)
                           .order_by(resource_values.c.path)).all()
    assert [tuple(g) for g in got] == [("emails.primary", 0.0), ("emails.value", None), ("title", None)]
