"""After a failover the front sends its batch again: queued once, never beside its answer."""

from __future__ import annotations

import pytest
from rq.results import Result

from libs.bus import resend
from tests.libs.bus.test_queues import bus, job, run_worker_once

pytestmark = pytest.mark.redis


def _resend(b, batch_id, jobs):
    return b.redis.eval(*resend.requeue_args(b._enqueue_args(batch_id, jobs), batch_id))


def test_a_batch_the_new_primary_never_saw_is_queued_again_once(redis_conn):
    b = bus(redis_conn)
    writes = [job()]
    assert _resend(b, "lost", writes) == 1
    assert _resend(b, "lost", writes) == 0, "still queued: not pushed a second time"
    assert redis_conn.llen("rq:queue:test-writes") == 1
    run_worker_once(redis_conn)
    assert b.await_batch("lost", 1, timeout=5)[0].status == 201


def test_a_batch_whose_answer_exists_is_not_queued_again(redis_conn):
    b = bus(redis_conn)
    writes = [job()]
    b.submit_batch("answered", writes)
    run_worker_once(redis_conn)
    assert redis_conn.exists(Result.get_key("answered"))
    assert _resend(b, "answered", writes) == 0
    assert redis_conn.llen("rq:queue:test-writes") == 0


def test_a_batch_whose_hash_survived_but_not_its_queue_entry_is_queued_again(redis_conn):
    """The claim (or the worker that held it) was lost: RQ's unique enqueue would refuse the
    id and leave the job stranded until its timeout; the resend pushes it."""
    b = bus(redis_conn)
    writes = [job()]
    b.submit_batch("stranded", writes)
    redis_conn.delete("rq:queue:test-writes")
    assert _resend(b, "stranded", writes) == 1
    run_worker_once(redis_conn)
    assert b.await_batch("stranded", 1, timeout=5)[0].status == 201
