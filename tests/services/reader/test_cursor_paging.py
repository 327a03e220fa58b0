"""Cursor paging (RFC 9865) over a directory that changes while a client pages through it.

Every user that exists throughout a traversal appears exactly once, while another client
creates and deletes users. The bounded run (1,500 users, on SQLite: the keyset SQL is the
same on both backends, and the other cursor tests run on both) is part of ``make test``;
the 10,000-user run, on both backends, is ``-m slow``.
"""

from __future__ import annotations

import threading

import pytest

from tests.services.conftest import unique
from tests.services.test_entra_flows import assert_scim_error, entra_user

pytestmark = pytest.mark.stack

BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def bulk_create(scim, names: list[str]) -> list[str]:
    ids: list[str] = []
    for start in range(0, len(names), 1000):
        chunk = names[start:start + 1000]
        response = scim.post("/Bulk", json={"schemas": [BULK], "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": str(i), "data": entra_user(name)}
            for i, name in enumerate(chunk)]}, timeout=600)
        assert response.status_code == 200, response.text[:2000]
        ops = response.json()["Operations"]
        assert {o["status"] for o in ops} == {"201"}, [o for o in ops if o["status"] != "201"][:3]
        ids += [o["location"].rsplit("/", 1)[1] for o in ops]
    return ids


def traverse_while_churning(scim, stack, users: int, page: int) -> None:
    tag = unique("page")
    stable = set(bulk_create(scim, [f"{tag}-{i:05d}@example.com" for i in range(users)]))
    doomed = bulk_create(scim, [f"{tag}-doomed-{i:04d}@example.com" for i in range(users // 20)])
    stop = threading.Event()
    churned = {"created": 0, "deleted": 0}

    def churn() -> None:
        with stack.client() as other:
            i = 0
            while not stop.is_set():
                if i < len(doomed):
                    assert other.delete(f"/Users/{doomed[i]}").status_code == 204
                    churned["deleted"] += 1
                created = other.post("/Users", json=entra_user(f"{tag}-new-{i:05d}@example.com"))
                assert created.status_code == 201
                churned["created"] += 1
                i += 1

    thread = threading.Thread(target=churn)
    thread.start()
    seen: list[str] = []
    try:
        params = {"filter": f'userName sw "{tag}"', "count": page, "attributes": "userName", "cursor": ""}
        pages = 0
        while True:
            response = scim.get("/Users", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["itemsPerPage"] == len(body["Resources"]) <= page
            seen += [r["id"] for r in body["Resources"]]
            pages += 1
            if "nextCursor" not in body:
                break
            params["cursor"] = body["nextCursor"]
    finally:
        stop.set()
        thread.join()
    assert len(seen) == len(set(seen)), "a resource appeared twice"
    assert stable <= set(seen), f"{len(stable - set(seen))} users that existed throughout are missing"
    assert pages >= users // page
    assert churned["created"] > 0 and churned["deleted"] > 0


def test_cursor_pages_list_every_user_that_existed_throughout_exactly_once(scim, stack, request):
    if request.node.callspec.params.get("stack") != "sqlite":
        pytest.skip("bounded run on SQLite; PostgreSQL runs the 10,000-user version (-m slow)")
    traverse_while_churning(scim, stack, users=1500, page=100)


@pytest.mark.slow
def test_cursor_pages_over_ten_thousand_users_while_others_write(scim, stack):
    traverse_while_churning(scim, stack, users=10000, page=500)


def test_a_forged_or_foreign_cursor_is_400_invalid_cursor(scim):
    first = scim.get("/Users", params={"cursor": "", "count": 1}).json()
    assert "startIndex" not in first
    assert_scim_error(scim.get("/Users", params={"cursor": "bm90LWEtY3Vyc29y", "count": 1}), 400, "invalidCursor")
    if "nextCursor" in first:
        foreign = scim.get("/Users", params={"cursor": first["nextCursor"], "filter": 'userName sw "x"'})
        assert_scim_error(foreign, 400, "invalidCursor")
        assert_scim_error(scim.get("/Groups", params={"cursor": first["nextCursor"]}), 400, "invalidCursor")


def test_a_cursor_is_no_offline_oracle_for_the_bearer_token(scim, stack):
    """Issue 16: cursors (which travel in URLs and logs) were signed with a key derived from the
    bearer token, so one cursor let anyone check guesses of the token offline. Here the guess
    is right, and still the cursor's signature does not confirm it."""
    import hashlib

    from itsdangerous import BadSignature, URLSafeTimedSerializer

    scim.post("/Users", json=entra_user())
    scim.post("/Users", json=entra_user())
    cursor = scim.get("/Users", params={"cursor": "", "count": 1, "attributes": "id"}).json()["nextCursor"]
    guessed = hashlib.sha256(("scimbus-cursor\n" + stack.token).encode()).hexdigest()  # the derivation
    with pytest.raises(BadSignature):
        URLSafeTimedSerializer(guessed, salt="scimbus.cursor.v1").loads(cursor)
    with pytest.raises(BadSignature):
        URLSafeTimedSerializer(stack.token, salt="scimbus.cursor.v1").loads(cursor)
    assert scim.get("/Users", params={"cursor": cursor, "count": 1}).status_code == 200  # it still pages


def test_cursor_paging_refuses_a_bad_count_and_mixing_with_start_index(scim):
    assert_scim_error(scim.get("/Users", params={"cursor": "", "count": 0}), 400, "invalidCount")
    assert_scim_error(scim.get("/Users", params={"cursor": "", "count": "ten"}), 400, "invalidCount")
    assert_scim_error(scim.get("/Users", params={"cursor": "", "startIndex": 2}), 400, "invalidValue")


def test_service_provider_config_advertises_both_pagination_methods(scim):
    pagination = scim.get("/ServiceProviderConfig").json()["pagination"]
    assert pagination["cursor"] is True and pagination["index"] is True
    assert pagination["cursorTimeout"] > 0
