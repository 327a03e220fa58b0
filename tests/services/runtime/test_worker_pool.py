"""The worker pool: its workers, and RQ's scheduler (which re-queues retries when due) in
the pool's parent rather than in a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rq.scheduler import RQScheduler

from libs.bus import defaults
from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.bus.serializer import OrjsonSerializer
from libs.health import live_workers
from libs.bus.rq_adapter import PoolScheduler
from tests.support.servers import free_port, redis_server
from tests.support.stack import descendants

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[3]


def _start_pool(tmp_path: Path, redis_url: str, queue: str, processes: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env.update(SCIM_REDIS_URL=redis_url, SCIM_QUEUE_NAME=queue, SCIM_VAR_DIR=str(tmp_path), SCIM_TOKEN="p" * 32,
               SCIM_DATABASE_URL=f"sqlite:///{tmp_path / 'scimbus.db'}", SCIM_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "tests.support.job_functions", "worker", "--processes", str(processes),
                             "--metrics-port", str(free_port())], cwd=ROOT, env=env, start_new_session=True)


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_job_that_failed_once_is_run_again_by_the_pools_scheduler_and_the_pool_runs_only_its_workers(
        redis_conn, redis_url, tmp_path):
    queue = f"pool-{uuid.uuid4().hex[:8]}"
    pool = _start_pool(tmp_path, redis_url, queue, processes=2)
    try:
        _wait(lambda: live_workers(redis_conn, queue) == 2, 30, "the workers did not register")
        bus = Bus(redis_conn, queue, job_timeout=10, function="tests.libs.bus.jobs.flaky")
        write = WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                         resource_id=str(uuid.uuid4()), body={}, meta={"marker": str(tmp_path / "marker")})
        bus.submit_batch(write.job_id, [write])
        # The first run fails; only a scheduler puts the retry back on the queue a second later.
        assert bus.await_batch(write.job_id, 1, timeout=15)[0].status == 201
        assert (tmp_path / "marker").exists()
        assert len(descendants(pool.pid)) == 2
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(20)
    assert redis_conn.get(RQScheduler.get_locking_key(queue)) is None  # released on the way out


def test_the_job_of_a_worker_killed_mid_job_runs_again_as_soon_as_the_pool_reaps_it(
        redis_conn, redis_url, tmp_path):
    """RQ alone would find the job abandoned only when its registry entry expires, the job's
    timeout + 5 s after it started (35 s here): the pool releases it when it reaps the worker."""
    queue = f"pool-{uuid.uuid4().hex[:8]}"
    pool = _start_pool(tmp_path, redis_url, queue, processes=2)
    try:
        _wait(lambda: live_workers(redis_conn, queue) == 2, 30, "the workers did not register")
        bus = Bus(redis_conn, queue, job_timeout=30, function="tests.services.slow_jobs.stall_once")
        marker = tmp_path / "first-run"
        write = WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                         resource_id=str(uuid.uuid4()), body={}, meta={"marker": str(marker)})
        bus.submit_batch(write.job_id, [write])
        _wait(lambda: marker.exists() and marker.read_text(), 15, "no worker took the job")
        os.kill(int(marker.read_text()), signal.SIGKILL)
        killed_at = time.monotonic()
        answer = bus.await_batch(write.job_id, 1, timeout=30)[0]
        assert answer.status == 201 and answer.body["id"] == write.resource_id
        # reaped within a second, re-run after the first retry interval (1 s): far from 35 s
        assert time.monotonic() - killed_at < 12
        # the dead worker no longer counts as live (its registration would have lasted 35 s)
        _wait(lambda: live_workers(redis_conn, queue) == 2 and len(descendants(pool.pid)) == 2, 10,
              "the dead worker was not replaced, or still counts")
        assert int(marker.read_text()) not in descendants(pool.pid)
    finally:
        os.killpg(pool.pid, signal.SIGTERM)
        pool.wait(20)


def _tick_until(scheduler: PoolScheduler, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scheduler.tick()
        if scheduler.holds_lock:
            return True
        time.sleep(0.2)
    return False


def test_when_the_pool_holding_the_scheduler_lock_stops_another_pool_takes_it_over(redis_url):
    queue = f"pool-{uuid.uuid4().hex[:8]}"
    first, second = (PoolScheduler(queue, redis_url, OrjsonSerializer) for _ in range(2))
    assert _tick_until(first, 2)
    assert not _tick_until(second, 1.5)  # one scheduler per queue
    first.stop()
    assert _tick_until(second, defaults.MAINTENANCE_INTERVAL + 2)
    second.stop()


def test_a_scheduler_whose_redis_is_down_keeps_ticking_and_takes_the_lock_once_redis_is_up():
    port = free_port()
    scheduler = PoolScheduler("writes", f"redis://:secret@127.0.0.1:{port}/0", OrjsonSerializer)
    scheduler.tick()  # refused: logged, not raised
    assert not scheduler.holds_lock
    with redis_server(port=port, password="secret"):
        assert _tick_until(scheduler, defaults.MAINTENANCE_INTERVAL + 2)
        scheduler.stop()


@pytest.mark.parametrize("redis_state", ["down", "hung"])
def test_clearing_up_after_a_dead_worker_never_stalls_or_breaks_the_pool(redis_state, caplog):
    """The pool's own loop (respawning workers, the scheduler) calls it: a Redis that refuses,
    or accepts and never answers, costs it a logged warning and at most the janitor's timeout."""
    import socket

    from redis import Redis

    from libs.bus.rq_adapter import ScimWorker, _Pool

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        if redis_state == "hung":
            listener.listen(8)  # accepts connections, answers nothing
        else:
            listener.close()
        url = f"redis://127.0.0.1:{port}/0"
        pool = _Pool(["writes"], connection=Redis.from_url(url), num_workers=1, worker_class=ScimWorker,
                     serializer=OrjsonSerializer, scheduler=PoolScheduler("writes", url, OrjsonSerializer),
                     janitor=Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5))
        started = time.monotonic()
        pool.bury("a-worker-that-died")
        assert time.monotonic() - started < 5
    assert "could not clear up after dead worker a-worker-that-died" in caplog.text
