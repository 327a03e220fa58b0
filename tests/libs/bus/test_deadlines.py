"""The claim / give-up race on a write's job, at the Lua level against a real Redis."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
import uuid

import pytest

from libs.bus import deadlines
from libs.bus.deadlines import ABANDONED, CLAIMED, DEADLINE_MARGIN, EXPIRED, GONE, claim, give_up
from libs.bus.messages import WriteJob
from libs.bus.queues import Bus

pytestmark = pytest.mark.redis


def write() -> WriteJob:
    return WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                    resource_id=str(uuid.uuid4()), body={"userName": "x"})


def enqueued(redis_conn, wait: float) -> str:
    """A batch job enqueued as the front does, its deadline ``wait`` seconds away: its key."""
    batch = uuid.uuid4().hex
    Bus(redis_conn, "test-writes", job_timeout=5).submit_batch(batch, [write()], wait=wait)
    return f"rq:job:{batch}"


def redis_ms(redis_conn) -> int:
    seconds, micros = redis_conn.time()
    return seconds * 1000 + micros // 1000


def test_the_deadline_is_stamped_on_redis_clock_as_the_wait_less_the_margin(redis_conn):
    before = redis_ms(redis_conn)
    key = enqueued(redis_conn, wait=30)
    after = redis_ms(redis_conn)
    deadline = int(redis_conn.hget(key, deadlines.DEADLINE_FIELD))
    wait_ms = int((30 - DEADLINE_MARGIN) * 1000)
    assert before + wait_ms <= deadline <= after + wait_ms


def test_a_worker_claims_a_job_before_its_deadline_and_the_front_then_cannot_give_it_up(redis_conn):
    key = enqueued(redis_conn, wait=30)
    assert claim(redis_conn, key) == CLAIMED
    assert give_up(redis_conn, key) == CLAIMED   # the front waits on for the outcome
    assert claim(redis_conn, key) == CLAIMED     # a re-run after its worker died goes on


def test_a_job_its_front_gave_up_is_never_claimed(redis_conn):
    key = enqueued(redis_conn, wait=30)
    assert give_up(redis_conn, key) == ABANDONED
    assert claim(redis_conn, key) == ABANDONED
    assert give_up(redis_conn, key) == ABANDONED


def test_a_job_past_its_deadline_expires_when_a_worker_finds_it_and_stays_expired(redis_conn):
    key = enqueued(redis_conn, wait=DEADLINE_MARGIN + 0.2)
    time.sleep(0.3)
    assert claim(redis_conn, key) == EXPIRED
    assert give_up(redis_conn, key) == EXPIRED
    assert claim(redis_conn, key) == EXPIRED


def test_a_claimed_job_stays_claimed_past_its_deadline(redis_conn):
    key = enqueued(redis_conn, wait=DEADLINE_MARGIN + 0.2)
    assert claim(redis_conn, key) == CLAIMED
    time.sleep(0.3)
    assert claim(redis_conn, key) == CLAIMED


def test_a_job_that_is_not_there_is_gone_and_nothing_is_created(redis_conn):
    assert give_up(redis_conn, "rq:job:nothing") == GONE
    assert claim(redis_conn, "rq:job:nothing") == GONE
    assert not redis_conn.exists("rq:job:nothing")


def test_a_job_without_a_deadline_from_an_older_front_is_claimed(redis_conn):
    key = enqueued(redis_conn, wait=30)
    redis_conn.hdel(key, deadlines.DEADLINE_FIELD)
    assert claim(redis_conn, key) == CLAIMED


def test_claims_racing_give_ups_always_agree_on_one_winner(redis_conn, redis_url):
    """Workers and fronts on their own connections, released together on 300 jobs: for each,
    the worker applies it exactly when the front waits for it, never both or neither."""
    from redis import Redis

    keys = [enqueued(redis_conn, wait=30) for _ in range(300)]
    outcomes: dict[str, dict[str, str]] = {k: {} for k in keys}
    start = threading.Barrier(2)

    def side(name: str, act, order) -> None:
        conn = Redis.from_url(redis_url)
        start.wait()
        for key in order:
            outcomes[key][name] = act(conn, key)

    worker = threading.Thread(target=side, args=("worker", claim, keys))
    front = threading.Thread(target=side, args=("front", give_up, list(reversed(keys))))
    for t in (worker, front):
        t.start()
    for t in (worker, front):
        t.join(30)
    won = {"claimed": 0, "abandoned": 0}
    for key, seen in outcomes.items():
        assert seen["worker"] == seen["front"], (key, seen)  # both sides see the same fate
        assert seen["worker"] in (CLAIMED, ABANDONED)
        won[seen["worker"]] += 1
    assert won["claimed"] and won["abandoned"], won  # the race was run from both ends


# ------------------------------------------------------------- the front's side of the rule
def _front_write(bus: Bus, timeout: float) -> tuple[threading.Thread, dict]:
    """One write sent as the front sends it, in a thread: its outcome lands in the dict."""
    out: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            out["results"] = bus.run_batch(out.setdefault("batch", uuid.uuid4().hex), [write()], timeout)
        except Exception as exc:  # the SCIM error the front would render
            out["error"] = exc
        out["waited"] = time.monotonic() - started

    out["batch"] = uuid.uuid4().hex
    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def _queued(redis_conn, batch: str) -> str:
    deadline = time.monotonic() + 5
    while not redis_conn.exists(f"rq:job:{batch}"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return f"rq:job:{batch}"


def test_a_write_no_worker_claimed_is_given_up_at_its_deadline_and_answered_503(redis_conn):
    from libs.scim.errors import Unavailable

    thread, out = _front_write(Bus(redis_conn, "test-writes", job_timeout=5), timeout=0.6)
    thread.join(10)
    assert isinstance(out["error"], Unavailable) and out["error"].status == 503
    assert redis_conn.hget(f"rq:job:{out['batch']}", deadlines.STATE_FIELD) == b"abandoned"
    assert claim(redis_conn, f"rq:job:{out['batch']}") == ABANDONED  # a worker arriving now drops it


def test_a_write_claimed_before_the_deadline_is_waited_for_and_its_result_answered(redis_conn):
    from tests.libs.bus.test_queues import run_worker_once

    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
    thread, out = _front_write(bus, timeout=0.6)
    assert claim(redis_conn, _queued(redis_conn, out["batch"])) == CLAIMED  # a worker has it ...
    time.sleep(1.0)                                                        # ... past the front's deadline
    run_worker_once(redis_conn)                                            # and commits
    thread.join(10)
    assert "error" not in out, out.get("error")
    assert out["results"][0].status == 201 and out["waited"] >= 1.0


def test_a_claimed_write_without_an_outcome_is_a_500_saying_so_never_a_503(redis_conn):
    from libs.scim.errors import OutcomeUnknown

    bus = Bus(redis_conn, "test-writes", job_timeout=1)  # commit_wait: the job's timeout
    thread, out = _front_write(bus, timeout=0.5)
    assert claim(redis_conn, _queued(redis_conn, out["batch"])) == CLAIMED
    thread.join(10)
    assert isinstance(out["error"], OutcomeUnknown) and out["error"].status == 500
    assert "may have been applied" in out["error"].to_body()["detail"]
    assert 1.4 <= out["waited"] < 5


def test_a_bulk_request_whose_second_batch_gets_no_worker_keeps_the_first_batchs_results(redis_conn, redis_url):
    """A Bulk request naming a bulkId goes out in two batches; when only the first is applied,
    the request is not 503 as a whole (which would say nothing was applied): the applied
    operation answers its 201 and the other its 503."""
    from libs.config import Settings
    from services.front import bulk

    bus = Bus(redis_conn, "test-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
    planned = bulk.plan([{"method": "POST", "path": "/Users", "bulkId": "u", "data": {"userName": "u"}},
                         {"method": "POST", "path": "/Groups", "bulkId": "g",
                          "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "g",
                                   "members": [{"value": "bulkId:u"}]}}],
                        Settings(), "default", "request")

    # A worker that takes the first batch only, then goes away.
    code = ("from redis import Redis; from libs.bus.rq_adapter import ScimWorker; "
            "from tests.support.job_functions import WithTestJobs; "
            f"ScimWorker(['test-writes'], connection=Redis.from_url({redis_url!r}), job_class=WithTestJobs"
            ").work(max_jobs=1, with_scheduler=False)")
    worker = subprocess.Popen([sys.executable, "-c", code])
    try:
        bulk.run(bus, planned, None, timeout=5.0)
    finally:
        worker.wait(10)
    answer = bulk.response(planned, "https://scim.example/scim")["Operations"]
    assert [op["status"] for op in answer] == ["201", "503"]


# ------------------------------------------------------------------ Redis away mid-wait
@pytest.fixture
def own_redis(tmp_path):
    from tests.support.servers import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.close()


@pytest.mark.servers  # a redis-server of its own, stopped and restarted
def test_a_redis_restart_mid_wait_gives_the_job_up_once_redis_is_back_and_says_the_outcome_is_unknown(own_redis):
    """The wait cannot read the outcome while Redis is away, nor give the job up: it tries
    again until Redis answers, then gives the job up, so no worker applies it later. A
    claim written in the last second before the stop may be missing from what Redis
    reloaded, so the answer is "unknown" (500), never a 503."""
    from redis import Redis

    from libs.scim.errors import OutcomeUnknown

    redis = Redis.from_url(own_redis.url)
    thread, out = _front_write(Bus(redis, "test-writes", job_timeout=1), timeout=2.0)
    _queued(redis, out["batch"])
    own_redis.stop()  # the job is in the append-only file
    time.sleep(0.5)
    own_redis.start()
    thread.join(30)
    assert isinstance(out.get("error"), OutcomeUnknown), out
    assert claim(Redis.from_url(own_redis.url), f"rq:job:{out['batch']}") == ABANDONED


@pytest.mark.servers  # a redis-server of its own, stopped and restarted
def test_a_redis_away_past_the_whole_wait_is_an_unknown_outcome_never_a_503(own_redis):
    """Redis is gone and so is any way to know whether a worker claimed the job before it
    went: the answer says the outcome is unknown."""
    from redis import Redis

    from libs.scim.errors import OutcomeUnknown

    redis = Redis.from_url(own_redis.url, socket_connect_timeout=0.5)
    thread, out = _front_write(Bus(redis, "test-writes", job_timeout=1), timeout=1.0)
    _queued(redis, out["batch"])
    own_redis.stop()
    thread.join(60)
    assert isinstance(out.get("error"), OutcomeUnknown), out
    assert out["waited"] >= 1.0 + 1 - deadlines.DEADLINE_MARGIN  # its deadline, then the commit wait


@pytest.mark.servers  # a redis-server of its own, stopped and restarted
def test_a_job_lost_with_redis_data_mid_wait_is_an_unknown_outcome_not_a_503(own_redis):
    """Redis restarted without the job (no persistence, or its last second lost): a worker
    may have claimed and committed it before, and its claim and result went with Redis."""
    from redis import Redis

    from libs.scim.errors import OutcomeUnknown

    redis = Redis.from_url(own_redis.url)
    thread, out = _front_write(Bus(redis, "test-writes", job_timeout=1), timeout=1.5)
    _queued(redis, out["batch"])
    own_redis.stop()
    shutil.rmtree(own_redis.dir / "appendonlydir", ignore_errors=True)  # it comes back empty
    own_redis.start()
    thread.join(30)
    assert isinstance(out.get("error"), OutcomeUnknown), out
