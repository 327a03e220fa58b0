"""The worker's writes against the real store: costs that must not grow with a group's size."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import event

from libs.bus.messages import WriteJob
from libs.config import load_settings
from libs.scim.schemas import GROUP
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url
from services.worker import context
from services.worker.jobs import apply_batch

pytestmark = pytest.mark.db


@pytest.fixture
def worker_store(database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("SCIM_DATABASE_URL", database_url)
    monkeypatch.setenv("SCIM_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SCIM_TOKEN", "unused")
    engine = create_engine_from_url(database_url)
    monkeypatch.setattr(context, "_context", context.WorkerContext(load_settings(), DirectoryStore(engine)))
    monkeypatch.setattr(context, "_pid", __import__("os").getpid())
    yield engine
    engine.dispose()


def write(op: str, resource_type: str, resource_id: str, body=None) -> WriteJob:
    return WriteJob(job_id=uuid.uuid4().hex, op=op, app="default", resource_type=resource_type,
                    resource_id=resource_id, body=body)


def create_users(count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    for start in range(0, count, 500):
        jobs = [write("create", "User", i, {"userName": f"{i}@contoso.com"}) for i in ids[start:start + 500]]
        assert {r.status for r in apply_batch(jobs)} == {201}
    return ids


def add_members(group_id: str, ids: list[str]) -> WriteJob:
    return write("patch", "Group", group_id, {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                               "Operations": [{"op": "add", "path": "members",
                                                               "value": [{"value": i} for i in ids]}]})


def statements_for(engine, job: WriteJob) -> int:
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context_, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        (result,) = apply_batch([job])
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert result.status == 204, result.body
    return len(seen)


def test_adding_one_member_costs_the_same_for_a_small_and_a_large_group(worker_store):
    users = create_users(2003)
    small, large = str(uuid.uuid4()), str(uuid.uuid4())
    apply_batch([write("create", "Group", small, {"schemas": [GROUP], "displayName": f"small-{small}"}),
                 write("create", "Group", large, {"schemas": [GROUP], "displayName": f"large-{large}"})])
    assert apply_batch([add_members(small, users[:3])])[0].status == 204
    assert apply_batch([add_members(large, users[:2000])])[0].status == 204
    small_cost = statements_for(worker_store, add_members(small, [users[2001]]))
    large_cost = statements_for(worker_store, add_members(large, [users[2002]]))
    assert small_cost == large_cost


def test_thousands_of_members_in_one_patch_are_applied_in_bulk_statements(worker_store):
    users = create_users(3_000)
    group = str(uuid.uuid4())
    apply_batch([write("create", "Group", group, {"schemas": [GROUP], "displayName": f"big-{group}"})])
    started = time.perf_counter()
    statements = statements_for(worker_store, add_members(group, users))
    print(f"3,000 members in one PATCH: {time.perf_counter() - started:.2f} s, {statements} statements")
    assert statements < 100  # chunks of 500 ids, never a statement per member
    store = DirectoryStore(worker_store)
    doc = store.get("default", __import__("libs.scim.schemas", fromlist=["GROUPS"]).GROUPS, group)
    assert len(doc["members"]) == 3_000
