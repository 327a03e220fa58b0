"""Bad input gets the right SCIM error, changes nothing, and never a 500 or a traceback."""

from __future__ import annotations

import threading
import uuid

import pytest

from tests.services.conftest import unique
from tests.services.test_entra_flows import (
    PATCH_OP, assert_scim_error, create_group, create_user, entra_user, patch,
)

pytestmark = pytest.mark.stack


def totals(scim) -> tuple[int, int]:
    return (scim.get("/Users", params={"count": 0}).json()["totalResults"],
            scim.get("/Groups", params={"count": 0}).json()["totalResults"])


@pytest.fixture
def unchanged(scim):
    before = totals(scim)
    yield
    assert totals(scim) == before


def test_malformed_json_is_400_invalid_syntax(scim, unchanged):
    response = scim.post("/Users", content=b'{"userName": "x"')
    assert_scim_error(response, 400, "invalidSyntax")


def test_a_body_that_is_not_an_object_is_400_invalid_syntax(scim, unchanged):
    assert_scim_error(scim.post("/Users", content=b'["a"]'), 400, "invalidSyntax")


def test_wrong_content_type_is_a_scim_error(scim, unchanged):
    response = scim.post("/Users", content=b"userName=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_scim_error(response, 415)


def test_attribute_of_the_wrong_type_is_400_invalid_value(scim, unchanged):
    assert_scim_error(scim.post("/Users", json=entra_user(active={"yes": 1})), 400, "invalidValue")
    assert_scim_error(scim.post("/Users", json=entra_user(emails="a@b.c")), 400, "invalidValue")


def test_missing_user_name_is_400_invalid_value(scim, unchanged):
    body = entra_user()
    del body["userName"]
    assert_scim_error(scim.post("/Users", json=body), 400, "invalidValue")


@pytest.mark.parametrize("text", ['userName eq', 'userName zz "x"', '(userName eq "x"', 'nosuchattr eq "x"',
                                  'userName eq "x" or', 'emails[type eq "work"', '"; DROP TABLE resources; --'])
def test_invalid_filter_is_400_invalid_filter(scim, text):
    response = scim.get("/Users", params={"filter": text})
    assert_scim_error(response, 400, "invalidFilter")


def test_invalid_patch_path_is_400_invalid_path_and_changes_nothing(scim):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": 'emails[type eq "work"', "value": "x"})
    assert_scim_error(response, 400, "invalidPath")
    assert scim.get(f"/Users/{user['id']}").json()["meta"]["version"] == user["meta"]["version"]


def test_invalid_patch_op_is_400(scim):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}", {"op": "merge", "path": "title", "value": "x"})
    body = assert_scim_error(response, 400)
    assert body.get("scimType") in ("invalidSyntax", "invalidValue")


def test_patch_without_operations_is_400(scim):
    user = create_user(scim)
    response = scim.patch(f"/Users/{user['id']}", json={"schemas": [PATCH_OP]})
    assert_scim_error(response, 400)


def test_patch_of_an_unknown_user_is_404(scim):
    response = patch(scim, f"/Users/{uuid.uuid4()}", {"op": "replace", "path": "title", "value": "x"})
    assert_scim_error(response, 404)


def test_oversized_body_is_413_from_the_gateway(scim, unchanged):
    body = entra_user(title="x" * (5 * 1024 * 1024))
    assert_scim_error(scim.post("/Users", json=body), 413)


def test_too_long_value_is_400_invalid_value(scim, unchanged):
    assert_scim_error(scim.post("/Users", json=entra_user(title="x" * 5000)), 400, "invalidValue")


def test_unknown_endpoint_is_a_scim_404_and_wrong_method_a_scim_405(scim):
    assert_scim_error(scim.get("/Widgets"), 404)
    assert_scim_error(scim.delete("/Users"), 405)


def test_bad_paging_parameters_are_400(scim):
    assert_scim_error(scim.get("/Users", params={"count": "many"}), 400, "invalidValue")


def test_two_concurrent_creates_of_one_user_name_give_one_201_and_one_409(stack):
    for _ in range(5):
        body = entra_user(f"{unique('race')}@contoso.com")
        statuses: list[int] = []
        barrier = threading.Barrier(2)

        def create():
            with stack.client() as client:
                barrier.wait()
                statuses.append(client.post("/Users", json=dict(body, externalId=str(uuid.uuid4()))).status_code)

        threads = [threading.Thread(target=create) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(statuses) == [201, 409]


def test_two_concurrent_member_patches_of_one_group_lose_no_member(stack, scim):
    group = create_group(scim)
    users = [create_user(scim) for _ in range(8)]
    barrier = threading.Barrier(len(users))
    statuses: list[int] = []

    def add(user):
        with stack.client() as client:
            barrier.wait()
            response = patch(client, f"/Groups/{group['id']}", {"op": "add", "path": "members",
                                                                  "value": [{"value": user["id"]}]})
            statuses.append(response.status_code)

    threads = [threading.Thread(target=add, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [204] * len(users)
    members = scim.get(f"/Groups/{group['id']}").json()["members"]
    assert sorted(m["value"] for m in members) == sorted(u["id"] for u in users)
