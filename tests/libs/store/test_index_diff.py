"""The index diff's statement on PostgreSQL (libs/store/diff.py): rows passed as JSON texts are
stored exactly as the per-column arrays stored them, whatever the text and the number."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import text

from libs.scim.schemas import USERS
from libs.store import diff
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url
from libs.store.tables import KEY_PREFIX

pytestmark = pytest.mark.db

TEXTS = ["Ryan", "ünïcödé 😀 日本", 'quote " back \\ slash \\u0000 written out', "tab\tnew\nline\r", "x" * 3000,
         "", "'; DROP TABLE resources; --", "\u202e\u00a0\u2028"]
NUMBERS = [None, 0.1, 1e-7, 1733400000.123456, 5e-324, 1.7976931348623157e308, -0.0, 1.0, 0.0,
           123456789012345680.0, -2.5e-300, 1 / 3]


def _rows(prefix: str) -> list[dict]:
    return [{"path": f"{prefix}.{k}", "ordinal": k, "str_value": t, "ci_value": t.lower(), "ci_key": t.lower()[:KEY_PREFIX],
             "num_value": NUMBERS[k % len(NUMBERS)]} for k, t in enumerate(TEXTS + TEXTS[:4])]


def _stored(conn, pk: int) -> list[tuple]:
    rows = conn.execute(text("SELECT path, ordinal, str_value, ci_value, ci_key, num_value FROM resource_values "
                             "WHERE resource_pk = :pk ORDER BY ordinal"), {"pk": pk}).all()
    return [(*r[:5], repr(r[5])) for r in rows]  # repr: -0.0 and 0.0 differ


def _expected(rows: list[dict]) -> list[tuple]:
    return [(r["path"], r["ordinal"], r["str_value"], r["ci_value"], r["ci_key"], repr(r["num_value"]))
            for r in sorted(rows, key=lambda r: r["ordinal"])]


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "arrays"])
def test_index_rows_written_by_the_diff_read_back_exactly(database_url, monkeypatch, as_json):
    if not database_url.startswith("postgresql"):
        pytest.skip("the one-statement diff is PostgreSQL's")
    if not as_json:
        monkeypatch.setattr(diff, "json_carries", lambda text, numbers: False)
    engine = create_engine_from_url(database_url)
    store = DirectoryStore(engine)
    try:
        with engine.begin() as conn:
            stored = store.insert_resource(conn, "default", USERS, "diff-1", {"schemas": [USERS.core.urn],
                                                                              "userName": "diff@contoso.com"})
            first, second = _rows("a"), _rows("b")
            params = {"pk_": stored.pk, "version": 2, "last_modified": stored.last_modified, "name": "diff",
                      "name_key": "diff", "unique_name_key": "diff", "external_id": None, "display_name": None,
                      "active": None, "doc": '{"userName":"diff"}'}
            diff.update_with_values(conn, params, [], first)
            assert _stored(conn, stored.pk) == _expected(first)
            # Replace half of them (the keys to delete go as JSON too), then all of them.
            gone = [(r["path"], r["ordinal"]) for r in first[::2]]
            diff.update_with_values(conn, {**params, "version": 3}, gone, second[::2])
            assert _stored(conn, stored.pk) == _expected(first[1::2] + second[::2])
            diff.update_with_values(conn, {**params, "version": 4}, None, second)
            assert _stored(conn, stored.pk) == _expected(second)
            diff.update_with_values(conn, {**params, "version": 4}, [(r["path"], r["ordinal"]) for r in second[:3]], [])
            assert _stored(conn, stored.pk) == _expected(second[3:])
            assert conn.execute(text("SELECT version FROM resources WHERE pk = :pk"), {"pk": stored.pk}).scalar() == 4
            # No index row changes (a PATCH of active): the row alone; no document change: the version alone.
            diff.update_with_values(conn, {**params, "version": 5, "active": False}, [], [])
            diff.touch(conn, {**params, "version": 6, "doc": "not written"})
            assert _stored(conn, stored.pk) == _expected(second[3:])
            assert tuple(conn.execute(text("SELECT version, active, doc FROM resources WHERE pk = :pk"),
                                      {"pk": stored.pk}).one()) == (6, False, '{"userName":"diff"}')
    finally:
        engine.dispose()


def test_rows_json_cannot_carry_exactly_take_the_arrays():
    from libs.store.bulk import json_carries

    assert json_carries(b"[]", [None, 1e308])
    assert not json_carries(b"[]", [math.nan])  # orjson writes null
    assert not json_carries(b"[]", [math.inf])
    assert not json_carries(b'[{"str_value":"a\\u0000b"}]', [None])


# -- the rows of the diff: what a full rewrite leaves --------------------------------------------

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
STORED = {
    "schemas": [USERS.core.urn, ENTERPRISE], "userName": "ryan@contoso.com", "active": True, "title": "Eng",
    "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
    "emails": [{"value": "a@contoso.com", "type": "work", "primary": True}, {"value": "b@contoso.com", "type": "home"}],
    ENTERPRISE: {"employeeNumber": "1234567", "department": "Sales", "manager": {"value": "m1"}},
}
CHANGES = [
    {"op": "Replace", "path": "name.familyName", "value": "Other"},
    {"op": "Remove", "path": "name.givenName"},
    {"op": "Replace", "path": "name", "value": {"givenName": "R", "middleName": "M"}},
    {"op": "Remove", "path": "name"},
    {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": "m2"},
    {"op": "Remove", "path": f"{ENTERPRISE}:manager"},
    {"op": "Replace", "path": ENTERPRISE, "value": {"costCenter": "7"}},
    {"op": "Remove", "path": ENTERPRISE},
    {"op": "Remove", "path": 'emails[type eq "work"]'},
    {"op": "Add", "path": "emails", "value": [{"value": "c@contoso.com", "primary": True}]},
    {"op": "Replace", "path": "active", "value": False},
    {"op": "Replace", "path": "title", "value": ""},
    {"op": "Add", "value": {"nickName": "R", f"{ENTERPRISE}:department": "Ops", "name.honorificPrefix": "Dr"}},
]


def _index(rows: list[dict]) -> dict[tuple, dict]:
    return {(r["path"], r["ordinal"]): r for r in rows}


@pytest.mark.parametrize("changes", [[c] for c in CHANGES] + [CHANGES[4:7], CHANGES[:2] + CHANGES[9:]],
                         ids=range(len(CHANGES) + 2))
def test_the_diff_turns_the_stored_index_into_the_one_a_full_rewrite_makes(changes):
    from libs.scim.patch import apply_patch, parse_patch_request
    from libs.scim.validate import validate_resource
    from libs.store.values import flatten

    old = validate_resource(STORED, USERS)
    new = apply_patch(old, parse_patch_request({"Operations": changes}), USERS, validated=True).resource
    gone, added = diff.value_changes(*diff.changed_rows(old, new, USERS))
    index = _index(flatten(old, USERS))
    for key in gone:
        del index[key]
    index.update(_index(added))
    assert index == _index(flatten(new, USERS))
    assert len(added) <= len(flatten(new, USERS))
