"""The front's bus against a real Redis and real (burst) RQ workers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
import zlib

import pytest
from redis import Redis
from rq.scheduler import RQScheduler

from libs.bus import defaults
from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.bus.serializer import OrjsonSerializer
from libs.scim.errors import Unavailable
from libs.bus.rq_adapter import ScimWorker
from tests.support.job_functions import WithTestJobs

pytestmark = pytest.mark.redis


def job(**meta) -> WriteJob:
    return WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                    resource_id=str(uuid.uuid4()), body={"userName": "x"}, meta=meta)


def bus(redis_conn, function="echo", **kw) -> Bus:
    return Bus(redis_conn, "test-writes", job_timeout=5, function=f"tests.libs.bus.jobs.{function}", **kw)


def run_worker_once(redis_conn, queue="test-writes") -> None:
    ScimWorker([queue], connection=redis_conn, job_class=WithTestJobs).work(burst=True, with_scheduler=False)


def start_worker_soon(redis_url: str, delay: float = 0.5) -> subprocess.Popen:
    code = (f"import time; time.sleep({delay}); from redis import Redis; from libs.bus.rq_adapter import ScimWorker; "
            "from tests.support.job_functions import WithTestJobs; "
            f"ScimWorker(['test-writes'], connection=Redis.from_url({redis_url!r}), job_class=WithTestJobs"
            ").work(max_idle_time=3)")
    return subprocess.Popen([sys.executable, "-c", code])


def test_the_front_gets_the_result_the_worker_returned(redis_conn):
    b = bus(redis_conn)
    writes = [job(), job()]
    b.submit_batch("batch-1", writes)
    run_worker_once(redis_conn)
    results = b.await_batch("batch-1", 2, timeout=5)
    assert [r.body for r in results] == [{"id": w.resource_id} for w in writes]


def test_the_wait_blocks_until_a_worker_answers(redis_conn, redis_url):
    worker = start_worker_soon(redis_url)
    try:
        assert bus(redis_conn).apply(job(), timeout=10).status == 201
    finally:
        worker.wait(10)


def test_concurrent_writes_of_one_process_share_one_job_and_each_gets_its_own_result(redis_conn, redis_url):
    b = bus(redis_conn, in_flight=1)
    writes = [job() for _ in range(6)]
    results: dict[str, str] = {}
    gate = threading.Barrier(len(writes))

    def write(w: WriteJob) -> None:
        gate.wait()
        results[w.resource_id] = b.apply(w, timeout=10).body["id"]

    worker = start_worker_soon(redis_url, delay=1.0)
    threads = [threading.Thread(target=write, args=(w,)) for w in writes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    worker.wait(10)
    assert results == {w.resource_id: w.resource_id for w in writes}
    assert len(redis_conn.keys("rq:results:*")) < len(writes)  # fewer jobs than writes


def test_a_job_retried_after_a_transient_failure_still_answers(redis_conn, tmp_path):
    b = bus(redis_conn, "flaky")
    b.submit_batch("batch-2", [job(marker=str(tmp_path / "marker"))])
    run_worker_once(redis_conn)  # fails; the retry is scheduled a second later
    time.sleep(defaults.RETRY_INTERVALS[0] + 0.2)
    scheduler = RQScheduler(["test-writes"], connection=redis_conn, serializer=OrjsonSerializer)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    run_worker_once(redis_conn)
    assert b.await_batch("batch-2", 1, timeout=5)[0].status == 201


def test_no_worker_in_time_is_unavailable_with_retry_after(redis_conn):
    with pytest.raises(Unavailable) as caught:
        bus(redis_conn).apply(job(), timeout=0.3)
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"]


def test_a_job_that_fails_every_retry_is_unavailable_not_a_traceback(redis_conn):
    b = bus(redis_conn, "broken")
    b.submit_batch("batch-3", [job()])
    run_worker_once(redis_conn)
    with pytest.raises(Unavailable) as caught:
        b.await_batch("batch-3", 1, timeout=5)
    assert "Traceback" not in str(caught.value.to_body())


def _job_and_result_keys(batch_id: str) -> tuple[str, str]:
    from libs.bus.rq_adapter import result_key

    return f"rq:job:{batch_id}", result_key(batch_id)


def test_an_answered_batch_is_deleted_from_redis_by_the_next_enqueue(redis_conn):
    b = bus(redis_conn)
    b.submit_batch("spent-1", [job()])
    run_worker_once(redis_conn)
    assert b.await_batch("spent-1", 1, timeout=5)[0].status == 201
    first = _job_and_result_keys("spent-1")
    assert redis_conn.exists(*first) == 2  # read, but nothing was sent since

    second = threading.Thread(target=lambda: b.run_batch("spent-2", [job()], timeout=5))
    second.start()
    deadline = time.monotonic() + 5
    while redis_conn.llen("rq:queue:test-writes") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    run_worker_once(redis_conn)
    second.join(5)

    assert redis_conn.exists(*first) == 0
    assert redis_conn.exists(*_job_and_result_keys("spent-2")) == 2  # its own wait for the next


def test_a_batch_not_answered_with_a_success_is_kept_after_the_next_enqueue(redis_conn):
    b = bus(redis_conn, "broken")
    b.submit_batch("failed-1", [job()])
    run_worker_once(redis_conn)  # fails; its retry is scheduled
    with pytest.raises(Unavailable):
        b.await_batch("failed-1", 1, timeout=1)
    with pytest.raises(Unavailable):
        b.run_batch("failed-2", [job()], timeout=0.3)  # no worker: given up, never applied
    assert redis_conn.exists("rq:job:failed-1") == 1


def test_an_unreachable_redis_is_unavailable_and_nothing_is_enqueued():
    from tests.support.servers import free_port

    b = Bus(Redis(port=free_port(), socket_connect_timeout=0.5), "test-writes", job_timeout=5)
    with pytest.raises(Unavailable):
        b.apply(job(), timeout=1)


def test_the_same_batch_id_cannot_be_enqueued_twice(redis_conn):
    b = bus(redis_conn)
    b.submit_batch("batch-4", [job()])
    b.submit_batch("batch-4", [job()])
    assert redis_conn.llen("rq:queue:test-writes") == 1


class RecordingBus:
    """Stands in for the bus behind a Coalescer: records each batch, answers when let go."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.let_go = threading.Event()
        self.let_go.set()

    def run_batch(self, batch_id: str, jobs: list[WriteJob], timeout: float):
        from libs.bus.messages import WriteResult

        self.sizes.append(len(jobs))
        self.let_go.wait(timeout)
        return [WriteResult(201, {"n": i}) for i in range(len(jobs))]


def test_a_lone_write_goes_out_at_once_even_with_a_linger(monkeypatch):
    from libs.bus import queues

    slept: list[float] = []
    monkeypatch.setattr(queues.time, "sleep", slept.append)
    recording = RecordingBus()
    coalescer = queues.Coalescer(recording, max_batch=64, in_flight=2, linger=0.5)
    for _ in range(5):
        assert coalescer.apply(job(), timeout=5).status == 201
    assert recording.sizes == [1] * 5 and slept == []


def test_under_concurrent_writes_a_batch_lingers_for_the_writes_arriving_just_after():
    from libs.bus.queues import Coalescer

    recording = RecordingBus()
    coalescer = Coalescer(recording, max_batch=64, in_flight=1, linger=0.5)

    def write_soon(delay: float = 0.0) -> threading.Thread:
        t = threading.Thread(target=lambda: (time.sleep(delay), coalescer.apply(job(), timeout=10)))
        t.start()
        return t

    recording.let_go.clear()
    first = write_soon()                        # holds the only slot until let go
    time.sleep(0.2)
    waiting = [write_soon(), write_soon()]      # both join the next batch
    time.sleep(0.2)
    recording.let_go.set()
    for t in [first, *waiting]:
        t.join(5)
    assert recording.sizes == [1, 2]
    lone, neighbour = write_soon(), write_soon(0.1)  # the last batch had 2: this one lingers
    for t in (lone, neighbour):
        t.join(5)
    assert recording.sizes == [1, 2, 2]


def test_a_batch_is_the_job_rq_itself_would_enqueue(redis_conn):
    from rq import Queue, Retry
    from rq.job import Job
    from rq.utils import utcparse

    b = bus(redis_conn)
    write = job()
    b.submit_batch("batch-5", [write])
    mine = redis_conn.hgetall("rq:job:batch-5")
    Queue("test-writes", connection=redis_conn, serializer=OrjsonSerializer).enqueue(
        b.function, {"writes": [write.to_payload()]}, job_id="batch-6", job_timeout=5, result_ttl=defaults.RESULT_TTL,
        failure_ttl=defaults.FAILURE_TTL, ttl=defaults.QUEUED_TTL, unique=True, description="1 writes",
        retry=Retry(max=defaults.RETRIES, interval=defaults.RETRY_INTERVALS))
    theirs = redis_conn.hgetall("rq:job:batch-6")
    assert int(mine.pop(b"scim_deadline")) > 0  # scimbus's own field: the write's deadline
    assert zlib.decompress(mine.pop(b"data")) == zlib.decompress(theirs.pop(b"data"))  # the call, as RQ encodes it
    stamps = (b"created_at", b"enqueued_at")
    assert {k: v for k, v in mine.items() if k not in stamps} == {k: v for k, v in theirs.items() if k not in stamps}
    for stamp in stamps:
        assert abs(utcparse(mine[stamp].decode()) - utcparse(theirs[stamp].decode())).total_seconds() < 5
    fetched = Job.fetch("batch-5", connection=redis_conn, serializer=OrjsonSerializer)
    assert (fetched.func_name, fetched.args) == (b.function, [{"writes": [write.to_payload()]}])
    assert 0 < redis_conn.ttl("rq:job:batch-5") <= defaults.QUEUED_TTL
    assert b"rq:queue:test-writes" in redis_conn.smembers("rq:queues")
    assert redis_conn.lrange("rq:queue:test-writes", 0, -1) == [b"batch-5", b"batch-6"]


def test_the_enqueue_survives_redis_forgetting_its_scripts(redis_conn, redis_url):
    b = bus(redis_conn)
    b.submit_batch("batch-7", [job()])
    redis_conn.script_flush()  # as after a Redis restart
    w = job()
    b.submit_batch("batch-8", [w])
    run_worker_once(redis_conn)
    assert b.await_batch("batch-8", 1, timeout=5)[0].body == {"id": w.resource_id}


def test_a_batch_that_never_comes_back_holds_its_slot_only_for_the_slot_wait():
    """A worker killed mid-job keeps its batch out until RQ re-queues the job (~15-30 s);
    the next writes of the process go out after slot_wait instead of queueing behind it, on
    a spare slot. With the spares taken too, a write gets 503, and the writes after it are
    not joined to that failed batch."""
    from libs.bus.queues import Coalescer

    recording = RecordingBus()
    coalescer = Coalescer(recording, max_batch=64, in_flight=1, slot_wait=0.3)
    recording.let_go.clear()
    stuck = threading.Thread(target=lambda: coalescer.apply(job(), timeout=10))
    stuck.start()
    time.sleep(0.1)
    answered: list[float] = []

    def later_write() -> None:
        started = time.monotonic()
        result = coalescer.apply(job(), timeout=10)
        answered.append(time.monotonic() - started)
        assert result.status == 201

    # Both batches wait on let_go inside run_batch: the second must be sent while the first is out.
    sent = len(recording.sizes)
    follower = threading.Thread(target=later_write)
    follower.start()
    deadline = time.monotonic() + 5
    while len(recording.sizes) == sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recording.sizes == [1, 1]  # sent while the first batch is still out
    # With the slot and the spare both held, a third write waits its timeout (the slot wait
    # included, not added), then gets 503.
    started = time.monotonic()
    with pytest.raises(Unavailable, match="saturated"):
        coalescer.apply(job(), timeout=1)
    assert time.monotonic() - started < 1.6  # both waits added would be 2 s
    recording.let_go.set()
    for t in (stuck, follower):
        t.join(5)
    assert 0.25 <= answered[0] < 2
    assert coalescer.apply(job(), timeout=5).status == 201  # every slot came back


class ColdBus:
    """The bus while the workers are scaled to zero: a batch is answered once a worker has
    started (``started`` is set), or fails when its wait runs out first, as ``Bus.run_batch`` does."""

    def __init__(self) -> None:
        self.sent: list[tuple[float, float, list[str]]] = []
        """(monotonic time sent, the wait it was given, its writes' ids) of each batch."""
        self.started = threading.Event()

    def run_batch(self, batch_id: str, jobs: list[WriteJob], timeout: float):
        from libs.bus.messages import WriteResult

        self.sent.append((time.monotonic(), timeout, [j.job_id for j in jobs]))
        if not self.started.wait(timeout):
            raise Unavailable("No worker confirmed the write in time; retry the request.")
        return [WriteResult(201, {"n": i}) for i in range(len(jobs))]


def _write_every(coalescer, count: int, every: float, timeout: float) -> dict[str, tuple[float, float, object]]:
    """``count`` writes, one every ``every`` seconds, each in a thread: {job id: (arrived, answered, outcome)}."""
    outcomes: dict[str, tuple[float, float, object]] = {}

    def write() -> None:
        arrived, write = time.monotonic(), job()
        try:
            outcome: object = coalescer.apply(write, timeout=timeout).status
        except Unavailable as exc:
            outcome = exc
        outcomes[write.job_id] = (arrived, time.monotonic(), outcome)

    threads = []
    for _ in range(count):
        threads.append(threading.Thread(target=write))
        threads[-1].start()
        time.sleep(every)
    for t in threads:
        t.join(timeout + 5)
    return outcomes


def test_writes_waiting_for_a_worker_that_never_starts_each_get_503_at_their_own_timeout():
    """Scaled to zero, the first batch holds the process's slot and the second its spare while
    a worker starts; the writes after them must neither fail with that batch nor be kept past
    their own timeout (the deadline each write carries: a 503 must mean "never applied")."""
    from libs.bus.deadlines import DEADLINE_MARGIN
    from libs.bus.queues import _MIN_WAIT, Coalescer

    cold = ColdBus()
    slot_wait, timeout = 0.3, 2.0
    coalescer = Coalescer(cold, max_batch=64, in_flight=1, slot_wait=slot_wait)
    outcomes = _write_every(coalescer, count=12, every=0.15, timeout=timeout)
    assert len(outcomes) == 12 and all(isinstance(o, Unavailable) for _, _, o in outcomes.values())
    # A batch whose slot comes with less than the deadline margin (and the least wait) left is
    # not sent: its writes are answered that much early.
    earliest = timeout - slot_wait - DEADLINE_MARGIN - _MIN_WAIT - 0.1
    for arrived, answered, _ in outcomes.values():  # (before: up to twice the timeout)
        assert earliest <= answered - arrived <= timeout + 0.5, answered - arrived
    for sent, wait, ids in cold.sent:  # no batch had more time than the first of its writes had left
        assert 0.05 <= wait and sent + wait <= min(outcomes[i][0] for i in ids) + timeout + 0.01


def test_writes_waiting_for_a_worker_that_starts_in_time_are_all_answered():
    from libs.bus.queues import Coalescer

    cold = ColdBus()
    coalescer = Coalescer(cold, max_batch=64, in_flight=1, slot_wait=0.3)
    threading.Timer(1.0, cold.started.set).start()  # the worker's cold start
    outcomes = _write_every(coalescer, count=12, every=0.1, timeout=3.0)
    assert [o for _, _, o in outcomes.values()] == [201] * 12
    assert max(answered for _, answered, _ in outcomes.values()) - min(a for a, _, _ in outcomes.values()) < 2.0
