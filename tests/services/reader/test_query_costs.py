"""Reads that would cost the reader dearly (issue 16, medium 5), through the reader app on
SQLite and PostgreSQL: a filter of too many terms, a query past the statement timeout, a
page of large groups. Each is a SCIM answer, never a 500 and never unbounded work."""

from __future__ import annotations

import uuid

import pytest

from libs.scim.schemas import GROUPS, USERS
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url

pytestmark = pytest.mark.db

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _reader(database_url: str, tmp_path, **overrides):
    from services.reader.app import create_app

    return create_app({"database_url": database_url, "var_dir": tmp_path, "token": TOKEN, **overrides}).test_client()


def _seed(database_url: str, users: int = 0, groups: dict[str, int] | None = None) -> None:
    """``users`` users, and groups named by ``groups`` holding that many of them each."""
    engine = create_engine_from_url(database_url)
    store = DirectoryStore(engine)
    with store.transaction() as conn:
        made = store.insert_resources(conn, "default", USERS, [
            (str(uuid.uuid4()), {"schemas": [USERS.core.urn], "userName": f"user{i}", "title": f"title {i}"})
            for i in range(users)])
        for name, size in (groups or {}).items():
            (group,) = store.insert_resources(conn, "default", GROUPS, [
                (str(uuid.uuid4()), {"schemas": [GROUPS.core.urn], "displayName": name})])
            store.add_members(conn, "default", group, [u.id for u in made[:size]])
    engine.dispose()


def _assert_error(response, status: int, scim_type: str | None = None, mentions: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.get_json()
    assert body["status"] == str(status)
    assert body.get("scimType") == scim_type
    if mentions:
        assert mentions in body["detail"]
    return body


# --- too many terms ---------------------------------------------------------------------

def test_a_flat_or_chain_of_1100_terms_is_400_invalid_filter_naming_the_limit(database_url, tmp_path):
    # The review's attack: within the 10,000-character limit, and a 500 (RecursionError) before.
    attack = " or ".join(["id pr"] * 1100)
    assert len(attack) < 10_000
    reader = _reader(database_url, tmp_path)
    _assert_error(reader.get("/scim/Users", query_string={"filter": attack}, headers=AUTH), 400, "invalidFilter",
                  "more than 200 comparisons")
    for path in ("/scim/Users/.search", "/scim/.search"):
        _assert_error(reader.post(path, json={"schemas": [SEARCH], "filter": attack}, headers=AUTH), 400,
                      "invalidFilter", "more than 200 comparisons")


def test_a_filter_at_the_term_limit_is_answered_and_the_limit_is_a_setting(database_url, tmp_path):
    _seed(database_url, users=3)
    at_limit = " or ".join(f'userName eq "user{i}"' for i in range(200))
    reader = _reader(database_url, tmp_path)
    answer = reader.get("/scim/Users", query_string={"filter": at_limit}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.get_json()["totalResults"] == 3
    narrow = _reader(database_url, tmp_path, max_filter_terms=2)
    _assert_error(narrow.get("/scim/Users", query_string={"filter": 'id pr or id pr or id pr'}, headers=AUTH),
                  400, "invalidFilter", "more than 2 comparisons")


# --- statement timeout ------------------------------------------------------------------

def test_a_filter_slower_than_the_query_timeout_is_400_too_many_not_a_500(database_url, tmp_path):
    # 200 substring terms over 5,000 users: 0.2-0.4 s here, twenty times the timeout.
    _seed(database_url, users=5000)
    slow = " or ".join(f'title co "zz{i}"' for i in range(200))
    reader = _reader(database_url, tmp_path, query_timeout=0.02)
    _assert_error(reader.get("/scim/Users", query_string={"filter": slow}, headers=AUTH), 400, "tooMany",
                  "SCIM_QUERY_TIMEOUT")
    assert reader.get("/scim/Users", query_string={"filter": 'userName eq "user7"'},
                      headers=AUTH).get_json()["totalResults"] == 1  # the reader serves on


def test_a_plain_read_past_the_query_timeout_is_503_with_retry_after(database_url, tmp_path):
    # No filter to narrow: a read that slow means a database too busy, which a retry outlives.
    _seed(database_url, users=5000, groups={"everyone": 5000})
    reader = _reader(database_url, tmp_path, query_timeout=0.001)
    answer = reader.get("/scim/Groups", headers=AUTH)
    _assert_error(answer, 503)
    assert int(answer.headers["Retry-After"]) > 0


# --- members rendered per page ----------------------------------------------------------

def _page_all(reader, path: str, params: dict) -> tuple[list[dict], list[int]]:
    """Every resource, paging by startIndex + itemsPerPage as RFC 7644 §3.4.2.4 says."""
    seen, sizes, start = [], [], 1
    while True:
        body = reader.get(path, query_string={**params, "startIndex": start}, headers=AUTH).get_json()
        seen += body["Resources"]
        sizes.append(body["itemsPerPage"])
        start += body["itemsPerPage"]
        if start > body["totalResults"] or not body["itemsPerPage"]:
            return seen, sizes


def test_a_page_of_large_groups_renders_at_most_the_members_limit(database_url, tmp_path):
    # The review's attack at small scale: count=1000 over groups that are each large.
    _seed(database_url, users=40, groups={f"g{i}": 40 for i in range(6)})
    reader = _reader(database_url, tmp_path, max_page_members=100)
    body = reader.get("/scim/Groups", query_string={"count": 1000}, headers=AUTH).get_json()
    assert body["totalResults"] == 6
    assert body["itemsPerPage"] == 2  # a third group would render 120 members
    assert sum(len(g["members"]) for g in body["Resources"]) == 80
    groups, sizes = _page_all(reader, "/scim/Groups", {"count": 1000})
    assert sorted(g["displayName"] for g in groups) == [f"g{i}" for i in range(6)]
    assert all(len(g["members"]) == 40 for g in groups)
    assert sizes == [2, 2, 2]


def test_a_group_larger_than_the_limit_still_comes_one_per_page(database_url, tmp_path):
    _seed(database_url, users=30, groups={"big": 30, "small": 1})
    reader = _reader(database_url, tmp_path, max_page_members=10)
    groups, sizes = _page_all(reader, "/scim/Groups", {})
    assert [len(g["members"]) for g in groups] == [30, 1] and sizes == [1, 1]
    # Without members the limit does not apply: one page.
    body = reader.get("/scim/Groups", query_string={"excludedAttributes": "members"}, headers=AUTH).get_json()
    assert body["itemsPerPage"] == 2


def test_users_pages_are_bounded_by_the_groups_they_render_too(database_url, tmp_path):
    _seed(database_url, users=4, groups={f"g{i}": 4 for i in range(5)})
    reader = _reader(database_url, tmp_path, max_page_members=10)
    body = reader.get("/scim/Users", headers=AUTH).get_json()
    assert body["itemsPerPage"] == 2 and body["totalResults"] == 4  # five groups a user


def test_cursor_pages_and_the_root_search_keep_the_members_limit(database_url, tmp_path):
    _seed(database_url, users=10, groups={f"g{i}": 10 for i in range(4)})
    reader = _reader(database_url, tmp_path, max_page_members=25)
    names, cursor = [], ""
    while True:
        body = reader.get("/scim/Groups", query_string={"cursor": cursor, "count": 100}, headers=AUTH).get_json()
        assert sum(len(g["members"]) for g in body["Resources"]) <= 25
        names += [g["displayName"] for g in body["Resources"]]
        cursor = body.get("nextCursor")
        if not cursor:
            break
    assert sorted(names) == ["g0", "g1", "g2", "g3"]
    seen, start = [], 1
    while True:
        body = reader.post("/scim/.search", json={"schemas": [SEARCH], "startIndex": start, "count": 100},
                           headers=AUTH).get_json()
        rendered = sum(len(r.get("members") or r.get("groups") or ()) for r in body["Resources"])
        assert rendered <= 25 or body["itemsPerPage"] == 1
        seen += [r["id"] for r in body["Resources"]]
        start += body["itemsPerPage"]
        if start > body["totalResults"]:
            break
    assert len(seen) == len(set(seen)) == 14
