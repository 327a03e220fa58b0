"""A write batch's deadline claim rides in the worker's start of its job (``libs.bus.deadlines``,
``libs.bus.rq_adapter.ScimWorker.prepare_execution``): the rule holds with one round trip
fewer per job, on a real RQ worker applying real writes to the store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import text

from libs.bus import deadlines, expired, rq_adapter
from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.bus.rq_adapter import AllowedJob, ScimWorker
from libs.bus.serializer import OrjsonSerializer
from libs.config import load_settings
from libs.scim.schemas import USERS
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url
from services.worker import context
from tests.libs.bus.test_worker_bookkeeping import round_trips_per_job

QUEUE = "test-claims"


@pytest.fixture
def store(database_url, redis_conn, monkeypatch, tmp_path):
    monkeypatch.setenv("SCIM_DATABASE_URL", database_url)
    monkeypatch.setenv("SCIM_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SCIM_TOKEN", "unused")
    engine = create_engine_from_url(database_url)
    directory = DirectoryStore(engine)
    monkeypatch.setattr(context, "_context", context.WorkerContext(load_settings(), directory))
    monkeypatch.setattr(context, "_pid", os.getpid())
    yield directory
    engine.dispose()


def create() -> WriteJob:
    user_id = str(uuid.uuid4())
    return WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                    resource_id=user_id, body={"userName": f"{user_id}@contoso.com"})


def drain(redis_conn, worker_class=ScimWorker) -> None:
    worker_class([Queue(QUEUE, connection=redis_conn, serializer=OrjsonSerializer)], connection=redis_conn
                 ).work(burst=True, with_scheduler=False)


def outcomes(redis_conn, batch: str) -> list[tuple[str, object]]:
    return [rq_adapter.result_outcome(entry) for _, entry in redis_conn.xrange(rq_adapter.result_key(batch))]


def changes(directory: DirectoryStore, resource_id: str) -> int:
    with directory.transaction() as conn:
        return conn.execute(text("SELECT count(*) FROM changes WHERE resource_id = :r"),
                            {"r": resource_id}).scalar_one()


@pytest.fixture
def no_claim_of_its_own(monkeypatch):
    """``apply_writes`` must not claim the batch again: the worker's start did."""
    def refused(*args):
        raise AssertionError("a claim of its own: the start's was not used")

    monkeypatch.setattr(deadlines, "claim", refused)


def test_a_write_batch_costs_the_worker_three_round_trips_its_claim_included(store, redis_conn):
    """Take (one script while the queue has a backlog), start and claim (one script), finish
    (one script): four before the claim rode in the start."""
    bus = Bus(redis_conn, QUEUE, job_timeout=30)
    per_job = round_trips_per_job(redis_conn, lambda jobs: [bus.submit_batch(uuid.uuid4().hex, [create()])
                                                            for _ in range(jobs)], more=10, drain=drain)
    assert per_job <= 3.1, f"{per_job} round trips per job"


def test_a_batch_claimed_in_its_start_is_applied_and_the_front_can_no_longer_give_it_up(
        store, redis_conn, no_claim_of_its_own):
    bus = Bus(redis_conn, QUEUE, job_timeout=30)
    write = create()
    bus.submit_batch("batch-claimed", [write])
    drain(redis_conn)
    [(kind, value)] = outcomes(redis_conn, "batch-claimed")
    assert kind == rq_adapter.SUCCESSFUL and [r["status"] for r in value["results"]] == [201]
    assert store.get("default", USERS, write.resource_id) is not None
    assert deadlines.give_up(redis_conn, "rq:job:batch-claimed") == deadlines.CLAIMED


def test_a_batch_past_its_deadline_when_it_starts_is_never_applied_and_answered_503(
        store, redis_conn, no_claim_of_its_own):
    """Expired in the start's claim: not applied, each write 503, listed for the operator; and
    the job is no failed RQ job (its answer is the 503s), nor is it run again."""
    bus = Bus(redis_conn, QUEUE, job_timeout=30)
    writes = [create(), create()]
    bus.submit_batch("batch-late", writes, wait=deadlines.DEADLINE_MARGIN + 0.05)
    time.sleep(0.2)
    drain(redis_conn)
    [(kind, value)] = outcomes(redis_conn, "batch-late")
    assert kind == rq_adapter.SUCCESSFUL and value["expired"] == deadlines.EXPIRED
    assert [r["status"] for r in value["results"]] == [503, 503]
    assert all(store.get("default", USERS, w.resource_id) is None for w in writes)
    assert [e["write"] for e in expired.recent(redis_conn, QUEUE)] == [w.job_id for w in reversed(writes)]
    assert redis_conn.hget("rq:job:batch-late", deadlines.STATE_FIELD) == b"expired"
    assert FailedJobRegistry(QUEUE, connection=redis_conn).count == 0
    assert redis_conn.llen(f"rq:queue:{QUEUE}") == 0


def test_a_batch_its_front_gave_up_is_never_applied(store, redis_conn, no_claim_of_its_own):
    bus = Bus(redis_conn, QUEUE, job_timeout=30)
    write = create()
    bus.submit_batch("batch-given-up", [write])
    assert deadlines.give_up(redis_conn, "rq:job:batch-given-up") == deadlines.ABANDONED
    drain(redis_conn)
    [(kind, value)] = outcomes(redis_conn, "batch-given-up")
    assert kind == rq_adapter.SUCCESSFUL and value["expired"] == deadlines.ABANDONED
    assert [r["status"] for r in value["results"]] == [503]
    assert store.get("default", USERS, write.resource_id) is None


def test_a_batch_run_by_another_rq_worker_is_claimed_by_apply_writes_itself(store, redis_conn):
    """A worker that is not scimbus's (``rq worker``, a rolling upgrade) claims nothing as it
    starts a job: the batch is claimed before it is applied all the same."""
    from rq import SimpleWorker

    bus = Bus(redis_conn, QUEUE, job_timeout=30)
    late, on_time = create(), create()
    bus.submit_batch("batch-late", [late], wait=deadlines.DEADLINE_MARGIN + 0.05)
    time.sleep(0.2)
    bus.submit_batch("batch-on-time", [on_time])
    SimpleWorker([Queue(QUEUE, connection=redis_conn, serializer=OrjsonSerializer)], connection=redis_conn,
                 serializer=OrjsonSerializer, job_class=AllowedJob).work(burst=True, with_scheduler=False)
    assert [r["status"] for r in outcomes(redis_conn, "batch-late")[0][1]["results"]] == [503]
    assert [r["status"] for r in outcomes(redis_conn, "batch-on-time")[0][1]["results"]] == [201]
    assert store.get("default", USERS, late.resource_id) is None
    assert store.get("default", USERS, on_time.resource_id) is not None


def test_a_batch_run_again_after_its_worker_died_past_its_deadline_applies_exactly_once(store, redis_conn, redis_url):
    """The worker dies between the commit and the job's outcome; its job is handed back (as
    ``_Pool.bury`` does) and runs again after its deadline: claimed in its first start, it
    stays claimed, and the second run answers the first run's recorded result."""
    bus = Bus(redis_conn, QUEUE, job_timeout=30)
    write = create()
    bus.submit_batch("batch-rerun", [write], wait=deadlines.DEADLINE_MARGIN + 1.0)
    code = ("import os; from redis import Redis; from libs.bus.rq_adapter import ScimWorker\n"
            "class DiesAfterTheCommit(ScimWorker):\n"
            "    def handle_job_success(self, *args, **kwargs):\n"
            "        os._exit(1)\n"
            f"DiesAfterTheCommit([{QUEUE!r}], connection=Redis.from_url({redis_url!r})"
            ").work(max_jobs=1, with_scheduler=False)\n")
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ), timeout=60)
    assert store.get("default", USERS, write.resource_id) is not None and changes(store, write.resource_id) == 1
    assert outcomes(redis_conn, "batch-rerun") == []  # the front has no answer yet
    # The pool reaps the dead worker and hands its job back: RQ's clean-up re-runs it.
    registry = StartedJobRegistry(QUEUE, connection=redis_conn, job_class=AllowedJob, serializer=OrjsonSerializer)
    [entry] = redis_conn.zrange(registry.key, 0, -1)
    redis_conn.zadd(registry.key, {entry: 0}, xx=True)
    registry.cleanup()
    queue = Queue(QUEUE, connection=redis_conn, serializer=OrjsonSerializer)
    assert queue.scheduled_job_registry.get_job_ids() == ["batch-rerun"]
    time.sleep(1.0)  # past its deadline now
    queue.enqueue_job(Job.fetch("batch-rerun", connection=redis_conn, serializer=OrjsonSerializer))
    queue.scheduled_job_registry.remove("batch-rerun")
    drain(redis_conn)
    [(kind, value)] = outcomes(redis_conn, "batch-rerun")
    assert kind == rq_adapter.SUCCESSFUL and "expired" not in value
    [answer] = value["results"]
    assert answer["status"] == 201 and answer["body"]["id"] == write.resource_id
    assert changes(store, write.resource_id) == 1
