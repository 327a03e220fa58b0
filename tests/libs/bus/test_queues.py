"""The front's bus against a real Redis and a real (burst) RQ worker."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from redis import Redis

from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.scim.errors import Unavailable
from services.worker.main import ScimWorker

pytestmark = pytest.mark.redis


def job(**meta) -> WriteJob:
    return WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                    resource_id=str(uuid.uuid4()), body={"userName": "x"}, meta=meta)


def run_worker_once(redis_conn, queue="test-writes") -> None:
    ScimWorker([queue], connection=redis_conn).work(burst=True, with_scheduler=False)


def test_the_front_gets_the_result_the_worker_returned(redis_conn):
    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
    write = job()
    bus.submit(write)
    run_worker_once(redis_conn)
    result = bus.await_result(write.job_id, timeout=5)
    assert result.status == 201
    assert result.body == {"id": write.resource_id}


def test_the_wait_blocks_until_a_worker_answers(redis_conn, redis_url):
    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
    write = job()
    bus.submit(write)
    code = ("import time; time.sleep(0.5); from redis import Redis; from services.worker.main import ScimWorker; "
            f"ScimWorker(['test-writes'], connection=Redis.from_url({redis_url!r})).work(burst=True)")
    worker = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert bus.await_result(write.job_id, timeout=10).status == 201
    finally:
        worker.wait(10)


def test_a_job_retried_after_a_transient_failure_still_answers(redis_conn, tmp_path):
    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.flaky")
    write = job(marker=str(tmp_path / "marker"))
    bus.submit(write)
    run_worker_once(redis_conn)  # fails, re-queued; burst mode then runs the retry
    assert bus.await_result(write.job_id, timeout=5).status == 201


def test_no_worker_in_time_is_unavailable_with_retry_after(redis_conn):
    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
    write = job()
    bus.submit(write)
    with pytest.raises(Unavailable) as caught:
        bus.await_result(write.job_id, timeout=0.3)
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"]


def test_a_job_that_fails_every_retry_is_unavailable_not_a_traceback(redis_conn):
    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.broken")
    write = job()
    bus.submit(write)
    run_worker_once(redis_conn)
    with pytest.raises(Unavailable) as caught:
        bus.await_result(write.job_id, timeout=5)
    assert "Traceback" not in str(caught.value.to_body())


def test_an_unreachable_redis_is_unavailable_and_nothing_is_enqueued():
    from tests.support.servers import free_port

    bus = Bus(Redis(port=free_port(), socket_connect_timeout=0.5), "test-writes", job_timeout=5)
    with pytest.raises(Unavailable):
        bus.submit(job())


def test_the_same_job_id_cannot_be_enqueued_twice(redis_conn):
    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
    write = job()
    bus.submit(write)
    bus.submit(write)
    assert redis_conn.llen("rq:queue:test-writes") == 1
