"""Failed jobs in Redis: no password in them, and no more than the bound, against a real Redis."""

from __future__ import annotations

import uuid
import zlib

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry

from libs.bus import failures
from libs.bus.serializer import OrjsonSerializer
from libs.bus.rq_adapter import ScimWorker
from tests.support.job_functions import WithTestJobs

pytestmark = pytest.mark.redis

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"


def writes_with_passwords() -> dict:
    return {"writes": [
        {"job_id": uuid.uuid4().hex, "op": "create", "app": "default", "resource_type": "User",
         "resource_id": str(uuid.uuid4()), "body": {"userName": "ann", "password": HASH}, "meta": {}},
        {"job_id": uuid.uuid4().hex, "op": "patch", "app": "default", "resource_type": "User",
         "resource_id": str(uuid.uuid4()), "meta": {}, "body": {
             "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
             "Operations": [{"op": "replace", "path": "password", "value": HASH},
                            {"op": "replace", "value": {"Password": HASH, "title": "kept"}}]}},
    ]}


def test_a_payload_is_redacted_everywhere_a_password_can_be_and_nothing_else_changes():
    payload = writes_with_passwords()
    redacted = failures.redact_payload(payload)
    assert HASH not in repr(redacted)
    create, patch = redacted["writes"]
    assert create["body"] == {"userName": "ann", "password": failures.REDACTED}
    assert patch["body"]["Operations"][0]["value"] == failures.REDACTED
    assert patch["body"]["Operations"][1]["value"] == {"Password": failures.REDACTED, "title": "kept"}
    assert HASH in repr(payload)  # a copy: the original is untouched


def test_a_job_that_failed_for_good_keeps_no_password_in_redis(redis_conn):
    queue = Queue("test-writes", connection=redis_conn, serializer=OrjsonSerializer)
    job = queue.enqueue("tests.libs.bus.jobs.broken", writes_with_passwords(), job_id="failing-1")
    ScimWorker(["test-writes"], connection=redis_conn, job_class=WithTestJobs).work(burst=True, with_scheduler=False)
    assert job.id in FailedJobRegistry("test-writes", connection=redis_conn).get_job_ids()
    stored = redis_conn.hget(job.key, "data")
    assert HASH.encode() not in zlib.decompress(stored)
    assert b"[redacted]" in zlib.decompress(stored)
    assert b"ann" in zlib.decompress(stored)  # the rest is kept for the operator


def test_failed_jobs_are_trimmed_to_the_newest(redis_conn):
    queue = Queue("test-writes", connection=redis_conn, serializer=OrjsonSerializer)
    registry = FailedJobRegistry("test-writes", connection=redis_conn)
    for i in range(15):
        job = queue.enqueue("tests.libs.bus.jobs.broken", {"writes": []}, job_id=f"failed-{i:02d}")
        registry.add(job, ttl=3600 + i)  # later failures expire later
    assert failures.trim_failed(redis_conn, "test-writes", keep=10) == 5
    kept = sorted(registry.get_job_ids())
    assert kept == [f"failed-{i:02d}" for i in range(5, 15)]
    assert not redis_conn.exists("rq:job:failed-00") and redis_conn.exists("rq:job:failed-05")
    assert failures.trim_failed(redis_conn, "test-writes", keep=10) == 0
