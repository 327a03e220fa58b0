"""Filter values no stored string can hold, sent through the gateway (SQLite and PostgreSQL).

A JSON escape inside a quoted filter value decodes to U+0000 or to a lone surrogate: no
stored value holds either, PostgreSQL refuses NUL in text and the drivers cannot encode a
lone surrogate. The hostile sweep of 2026-12-05 found the reader answering such a GET 500,
and a PATCH whose path filter held one failing in the worker: its batch was retried for
~10 s and every write of it, a concurrent client's included, answered 503. Each is now a
400 of the request that holds it, and nothing else is touched.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.services.test_entra_flows import assert_scim_error, create_group, create_user, patch

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"

pytestmark = pytest.mark.stack

ESCAPES = ["\\u0000", "\\ud800", "a\\udfffb"]


@pytest.mark.parametrize("escape", ESCAPES)
@pytest.mark.parametrize("endpoint", ["/Users", "/Groups"])
def test_a_get_filter_whose_value_decodes_to_nul_or_a_lone_surrogate_is_400_invalid_filter(scim, endpoint, escape):
    response = scim.get(endpoint, params={"filter": f'externalId eq "{escape}"'})
    assert_scim_error(response, 400, "invalidFilter")


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_search_filter_whose_value_decodes_to_nul_or_a_lone_surrogate_is_400_invalid_filter(scim, escape):
    response = scim.post("/Users/.search", json={"schemas": [SEARCH], "filter": f'userName eq "{escape}"'})
    assert_scim_error(response, 400, "invalidFilter")


@pytest.mark.parametrize("escape", ESCAPES)
def test_a_patch_whose_path_filter_decodes_to_nul_or_a_lone_surrogate_is_400_at_once_and_changes_nothing(
        scim, escape):
    user = create_user(scim)
    started = time.monotonic()
    response = patch(scim, f"/Users/{user['id']}",
                     {"op": "add", "path": f'emails[type eq "{escape}"].value', "value": "x@contoso.com"})
    assert_scim_error(response, 400, "invalidPath")
    assert time.monotonic() - started < 5  # not a batch retried until RQ gives up
    assert scim.get(f"/Users/{user['id']}").json()["meta"]["version"] == user["meta"]["version"]


def test_the_writes_sent_beside_such_a_patch_are_all_applied(scim):
    group, users = create_group(scim), [create_user(scim) for _ in range(12)]
    poison = {"op": "remove", "path": 'members[value eq "a\\u0000"]'}

    def send(i: int):
        if i % 4 == 0:
            return "poison", patch(scim, f"/Groups/{group['id']}", poison)
        return "member", patch(scim, f"/Groups/{group['id']}", {"op": "add", "path": "members",
                                                                 "value": [{"value": users[i]["id"]}]})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(send, range(12)))
    assert {r.status_code for kind, r in answers if kind == "poison"} == {400}
    assert {r.status_code for kind, r in answers if kind == "member"} == {204}
    members = scim.get(f"/Groups/{group['id']}").json().get("members", [])
    assert {m["value"] for m in members} == {users[i]["id"] for i in range(12) if i % 4}
