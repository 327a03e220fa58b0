"""The order of a Bulk request's operations (``services.front.bulk.order``), without a stack:
request order, moved only where a ``bulkId`` reference points forward (RFC 7644 §3.7.2)."""

from __future__ import annotations

from libs.config import Settings
from services.front.bulk import order, plan

GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def user(bulk_id: str, **extra) -> dict:
    return {"method": "POST", "path": "/Users", "bulkId": bulk_id, "data": {"userName": bulk_id, **extra}}


def group(bulk_id: str, *members: str) -> dict:
    return {"method": "POST", "path": "/Groups", "bulkId": bulk_id,
            "data": {"schemas": [GROUP], "displayName": bulk_id, "members": [{"value": f"bulkId:{m}"} for m in members]}}


def patch(path: str, **value) -> dict:
    return {"method": "PATCH", "path": path,
            "data": {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": value}]}}


def ordered(*operations: dict) -> tuple[list[int], list]:
    planned = plan(list(operations), Settings(), "default", "request")
    return order(planned), planned


def test_a_request_without_forward_references_runs_in_its_own_order():
    assert ordered(user("a"), group("g", "a"), {"method": "DELETE", "path": "/Users/x"}, user("b"))[0] == [0, 1, 2, 3]


def test_an_operation_naming_later_posts_runs_once_they_have_and_the_rest_keeps_its_order():
    sequence, planned = ordered(group("g", "u", "v"), user("u"), {"method": "DELETE", "path": "/Users/x"}, user("v"),
                                patch("/Users/bulkId:w", title="T"), user("w"))
    assert sequence == [1, 2, 3, 0, 5, 4]
    assert all(p.error is None for p in planned)
    assert planned[0].needs == {"u": 1, "v": 3}


def test_operations_on_one_resource_keep_their_order_when_one_of_them_must_wait():
    # The first PATCH names a manager created later; the second PATCH of the same user waits for it.
    sequence, _ = ordered(patch("/Users/x", **{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager":
                                               "bulkId:m"}),
                          patch("/Users/x", title="T"), {"method": "DELETE", "path": "/Users/y"}, user("m"))
    assert sequence == [2, 3, 0, 1]


def test_a_cycle_and_what_depends_on_it_answer_409_and_come_last():
    sequence, planned = ordered(group("a", "b"), group("b", "a"), user("c"), group("d", "a"), group("self", "self"))
    assert sequence == [2, 0, 1, 3, 4]
    assert [p.error.status if p.error else None for p in planned] == [409, 409, None, 409, 409]
    assert "cycle" in planned[0].error.detail and planned[0].job is None


def test_a_repeated_bulk_id_is_refused_and_references_name_the_first_post():
    sequence, planned = ordered(user("a"), user("a"), group("g", "a"))
    assert planned[1].error.scim_type == "invalidValue" and planned[2].needs == {"a": 0}
    assert sequence == [0, 1, 2]
