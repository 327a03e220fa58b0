"""What RQ's bookkeeping of a job costs the worker and what of it scimbus relies on
(``ScimWorker`` in ``libs.bus.rq_adapter`` trims the rest)."""

from __future__ import annotations

import contextlib
import re
import signal
import time
import uuid

import pytest
from rq import Queue, Retry, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from libs.bus import defaults, rq_adapter
from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.bus.rq_adapter import ScimWorker
from libs.bus.serializer import OrjsonSerializer
from tests.support.job_functions import WithTestJobs

pytestmark = pytest.mark.redis

QUEUE = "test-writes"


class Inspecting(WithTestJobs):
    functions = WithTestJobs.functions | {"tests.libs.bus.jobs.inspect"}


def write() -> WriteJob:
    return WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                    resource_id=str(uuid.uuid4()), body={"userName": "x"}, meta={})


def bus(redis_conn, function="echo") -> Bus:
    return Bus(redis_conn, QUEUE, job_timeout=5, function=f"tests.libs.bus.jobs.{function}")


def drain(redis_conn) -> ScimWorker:
    worker = ScimWorker([QUEUE], connection=redis_conn, job_class=Inspecting)
    worker.work(burst=True, with_scheduler=False)
    return worker


@contextlib.contextmanager
def round_trips():
    from redis.connection import AbstractConnection

    count = [0]
    send = AbstractConnection.send_packed_command

    def counted(self, *args, **kwargs):
        count[0] += 1
        return send(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted
    try:
        yield count
    finally:
        AbstractConnection.send_packed_command = send


def round_trips_per_job(redis_conn, enqueue, *, more: int, drain=drain) -> float:
    """The worker's round trips per job: draining 1 + ``more`` jobs against draining one, so
    what a drain costs once (its last, empty look at the queue) cancels out. ``drain(redis)``
    runs a worker until the queue is empty."""
    counts = {}
    for jobs in (1, 1 + more):
        enqueue(jobs)
        with round_trips() as count:
            drain(redis_conn)
        counts[jobs] = count[0]
    return (counts[1 + more] - counts[1]) / more


def test_a_queued_job_costs_the_worker_three_round_trips_of_rq_bookkeeping(redis_conn):
    """Take and read it (one script while the queue has a backlog), start it, finish it:
    RQ 3.0's own worker spends nine (its dequeue's LMOVE and HGETALL, its two starts, the
    job's last heartbeat, a WATCH and a read of the job's dependents, the worker's IDLE
    state apart)."""
    b = bus(redis_conn)
    per_job = round_trips_per_job(redis_conn, lambda jobs: [b.submit_batch(uuid.uuid4().hex, [write()])
                                                            for _ in range(jobs)], more=20)
    assert per_job <= 3.1, f"{per_job} round trips per job"


def test_a_job_taken_with_its_hash_is_the_job_rq_fetches(redis_conn):
    """The backlog's script reads the job's hash itself; a job whose hash is gone (expired
    while queued) is passed over, as RQ's dequeue passes it over."""
    b = bus(redis_conn)
    for batch_id in ("batch-a", "batch-gone", "batch-b"):
        b.submit_batch(batch_id, [write()])
    fetched = Job.fetch("batch-b", connection=redis_conn, serializer=OrjsonSerializer)
    redis_conn.delete("rq:job:batch-gone")
    worker = ScimWorker([QUEUE], connection=redis_conn, job_class=Inspecting)
    assert worker.dequeue_job_and_maintain_ttl(None)[0].id == "batch-a"  # RQ's dequeue
    worker.prepare_execution(Job.fetch("batch-a", connection=redis_conn, serializer=OrjsonSerializer))
    with round_trips() as count:
        taken, queue = worker.dequeue_job_and_maintain_ttl(None)
    assert count[0] == 2 and queue.name == QUEUE  # a script per job taken, the gone one included
    assert type(taken) is Inspecting and taken.to_dict() == fetched.to_dict()
    assert taken.args == fetched.args and taken.func_name == fetched.func_name
    assert redis_conn.lrange(f"rq:queue:{QUEUE}:intermediate", 0, -1)[-1] == b"batch-b"
    assert redis_conn.llen(f"rq:queue:{QUEUE}") == 0


_VOLATILE = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z|\b\d{10}\.\d+\b|\b\d{13}\b")  # times, deadlines


def redis_contents(redis_conn, names: dict[str, str]) -> tuple[dict, dict]:
    """Everything in Redis: (each key's type and contents, with times and the ``names`` given
    replaced by placeholders; each key's TTL and scores, in seconds from now)."""
    now = time.time()

    def text(value: bytes) -> str:
        value = _VOLATILE.sub("<time>", value.decode("latin-1"))
        for name, placeholder in names.items():
            value = value.replace(name, placeholder)
        return value

    shapes, numbers = {}, {}
    for key in redis_conn.scan_iter():
        kind, name = redis_conn.type(key).decode(), text(key)
        numbers[name] = [redis_conn.ttl(key)]
        if kind == "hash":
            shapes[name] = kind, {text(f): text(v) for f, v in redis_conn.hgetall(key).items()}
        elif kind == "zset":
            entries = redis_conn.zrange(key, 0, -1, withscores=True)
            shapes[name] = kind, [text(member) for member, _ in entries]
            numbers[name] += [round(score - now) for _, score in entries]
        elif kind == "set":
            shapes[name] = kind, sorted(text(member) for member in redis_conn.smembers(key))
        elif kind == "list":
            shapes[name] = kind, [text(item) for item in redis_conn.lrange(key, 0, -1)]
        else:
            shapes[name] = kind, None
    return shapes, numbers


class RQsOwnStart(SimpleWorker):
    """RQ's own start of a job, with the heartbeat TTL ScimWorker gives a job."""

    get_heartbeat_ttl = ScimWorker.get_heartbeat_ttl


def started(redis_conn, worker_class, writes: list[WriteJob]) -> tuple[dict, dict]:
    """What Redis holds once ``worker_class`` started a queued job (taken as RQ's dequeue
    takes it)."""
    redis_conn.flushdb()
    bus(redis_conn).submit_batch(batch := uuid.uuid4().hex, writes)
    worker = worker_class([QUEUE], connection=redis_conn, job_class=Inspecting, serializer=OrjsonSerializer)
    redis_conn.lmove(f"rq:queue:{QUEUE}", f"rq:queue:{QUEUE}:intermediate")
    job = Inspecting.fetch(batch, connection=redis_conn, serializer=OrjsonSerializer)
    execution = worker.prepare_execution(job)
    worker.prepare_job_execution(job, remove_from_intermediate_queue=True)  # perform_job's first step
    return redis_contents(redis_conn, {batch: "<job>", worker.name: "<worker>", execution.id: "<execution>"})


def test_a_started_job_is_held_in_redis_exactly_as_rqs_own_start_holds_it(redis_conn):
    """One script instead of RQ's two transactions, the same keys, fields, members, TTLs and
    scores: what ``rq info``, RQ's clean-ups and ``_Pool.bury`` read of a running job."""
    writes = [write(), write()]
    ours, rqs = started(redis_conn, ScimWorker, writes), started(redis_conn, RQsOwnStart, writes)
    assert ours[0] == rqs[0]
    for key, numbers in rqs[1].items():
        assert ours[1][key] == pytest.approx(numbers, abs=1), key


def test_a_finished_job_leaves_its_result_for_the_front_and_nothing_in_flight(redis_conn):
    b = bus(redis_conn)
    writes = [write(), write()]
    b.submit_batch("batch-1", writes)
    worker = drain(redis_conn)
    # The front's wait: the result stream, read as the front reads it.
    [[_, [(_, entry)]]] = redis_conn.xread({rq_adapter.result_key("batch-1"): "0-0"})
    kind, value = rq_adapter.result_outcome(entry)
    assert kind == rq_adapter.SUCCESSFUL and [r["body"]["id"] for r in value["results"]] == \
        [w.resource_id for w in writes]
    assert 0 < redis_conn.ttl(rq_adapter.result_key("batch-1")) <= defaults.RESULT_TTL
    # The job's hash, as RQ would read it (``rq info``, Job.fetch), for RESULT_TTL.
    job = Job.fetch("batch-1", connection=redis_conn, serializer=OrjsonSerializer)
    assert job.get_status(refresh=False) == "finished"
    assert job.started_at <= job.ended_at and job.worker_name == worker.name
    assert 0 < redis_conn.ttl(job.key) <= defaults.RESULT_TTL
    assert job.latest_result().type == job.latest_result().Type.SUCCESSFUL
    # Nothing left in flight: a clean-up must find nothing to re-queue.
    assert StartedJobRegistry(QUEUE, connection=redis_conn).get_job_ids(cleanup=False) == []
    assert redis_conn.smembers(worker.executions_key) == set()
    assert redis_conn.llen(f"rq:queue:{QUEUE}:intermediate") == 0
    assert not redis_conn.exists("rq:executions:batch-1")
    assert [k for k in redis_conn.scan_iter("rq:execution:*")] == []
    # What nothing reads is not written (ScimWorker.handle_job_success).
    assert FinishedJobRegistry(QUEUE, connection=redis_conn).count == 0
    assert redis_conn.hget(worker.key, "successful_job_count") is None


def test_a_running_job_is_held_as_rq_finds_a_killed_workers_job(redis_conn):
    """While the job runs (one transaction started it): STARTED, in the started registry
    until its timeout + ABANDONED_GRACE, in the worker's index (``_Pool.bury``), off the
    intermediate queue, its worker busy and registered past the job's timeout."""
    b = bus(redis_conn, "inspect")
    b.submit_batch("batch-2", [write()])
    worker = drain(redis_conn)
    [[_, [(_, entry)]]] = redis_conn.xread({rq_adapter.result_key("batch-2"): "0-0"})
    seen = rq_adapter.result_outcome(entry)[1]["seen"]
    assert seen["status"] == "started"
    assert seen["job_ttl"] == -1  # persisted while it runs: its queued TTL no longer applies
    [entry_key] = seen["started"]
    assert entry_key.startswith("batch-2:") and seen["worker_executions"] == [entry_key]
    assert seen["abandoned_at"] - seen["now"] == pytest.approx(5 + defaults.ABANDONED_GRACE, abs=1)
    assert seen["intermediate"] == []
    assert seen["worker_state"] == "busy"
    assert seen["worker_ttl"] >= 5
    assert redis_conn.hget(worker.key, "state") == b"idle"


def deliveries(redis_conn, count: int) -> None:
    """Jobs enqueued as services.deliverer.fanout enqueues a delivery: kept for no time."""
    queue = Queue(QUEUE, connection=redis_conn, serializer=OrjsonSerializer)
    for _ in range(count):
        queue.enqueue("tests.libs.bus.jobs.echo", {"writes": []}, job_id=f"dlv-{uuid.uuid4().hex}", unique=True,
                      result_ttl=0, failure_ttl=3600, ttl=24 * 3600, job_timeout=60,
                      retry=Retry(max=3, interval=[1, 5, 15]))


def test_a_job_kept_for_no_time_is_deleted_with_what_rq_deletes_of_it(redis_conn):
    """A delivery's ``result_ttl=0``: nothing of it is left once it succeeded."""
    deliveries(redis_conn, 1)
    worker = drain(redis_conn)
    assert [k for k in redis_conn.scan_iter("rq:job*")] == []
    assert [k for k in redis_conn.scan_iter("rq:execution*")] == []
    assert [k for k in redis_conn.scan_iter("rq:results:*")] == []
    assert StartedJobRegistry(QUEUE, connection=redis_conn).get_job_ids(cleanup=False) == []
    assert redis_conn.smembers(worker.executions_key) == set()
    assert redis_conn.llen(f"rq:queue:{QUEUE}:intermediate") == 0
    assert redis_conn.hget(worker.key, "state") is None or worker.get_state() == "idle"


def test_a_queued_delivery_costs_the_worker_three_round_trips(redis_conn):
    """RQ 3.0's own worker reads a job it deletes (its status, dependents, executions)
    before deleting it."""
    per_job = round_trips_per_job(redis_conn, lambda jobs: deliveries(redis_conn, jobs), more=10)
    assert per_job <= 3.1, f"{per_job} round trips per job"


def test_a_job_failing_every_run_still_ends_in_the_failed_registry(redis_conn):
    b = bus(redis_conn, "broken")
    b.submit_batch("batch-3", [write()])
    queue = Queue(QUEUE, connection=redis_conn, serializer=OrjsonSerializer)
    for _ in range(defaults.RETRIES + 1):
        for job_id in queue.scheduled_job_registry.get_job_ids():  # due now, not after its interval
            queue.enqueue_job(Job.fetch(job_id, connection=redis_conn, serializer=OrjsonSerializer))
            queue.scheduled_job_registry.remove(job_id)
        drain(redis_conn)
    assert FailedJobRegistry(QUEUE, connection=redis_conn).get_job_ids() == ["batch-3"]
    assert StartedJobRegistry(QUEUE, connection=redis_conn).get_job_ids(cleanup=False) == []
    kinds = [rq_adapter.result_outcome(e)[0] for _, e in redis_conn.xrange(rq_adapter.result_key("batch-3"))]
    assert kinds[-1] == rq_adapter.FAILED  # what the front answers 503 on


class StoppedAsTheJobEnds(ScimWorker):
    """A worker whose SIGTERM (the pool's warm shutdown) arrives while the outcome of its
    first job is being sent to Redis."""

    def handle_job_success(self, *args, **kwargs):
        connection, send = self.connection, self.connection.eval

        def interrupted(*a, **k):
            if not self._stop_requested:
                self.request_stop(signal.SIGTERM, None)
            return send(*a, **k)

        connection.eval = interrupted
        try:
            super().handle_job_success(*args, **kwargs)
        finally:
            del connection.eval


def test_a_sigterm_as_a_job_ends_lets_it_succeed_and_stops_the_worker(redis_conn):
    """RQ's warm shutdown reads the worker's state in the process: BUSY until the job is
    done (its outcome sent), whatever Redis was told of IDLE in the same transaction, or
    the handler would raise inside the job's error handling: the job failed and retried,
    the worker going on with the queue."""
    b = bus(redis_conn)
    b.submit_batch("batch-first", [write()])
    b.submit_batch("batch-next", [write()])
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        worker = StoppedAsTheJobEnds([QUEUE], connection=redis_conn, job_class=Inspecting)
        worker.work(burst=True, with_scheduler=False)
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    kinds = [rq_adapter.result_outcome(e)[0] for _, e in redis_conn.xrange(rq_adapter.result_key("batch-first"))]
    assert kinds == [rq_adapter.SUCCESSFUL]
    assert redis_conn.lrange(f"rq:queue:{QUEUE}", 0, -1) == [b"batch-next"]  # left for the next worker
    assert redis_conn.hget(worker.key, "state") is None or worker.get_state() == "idle"
