"""SIGTERM, as `docker stop` and Kubernetes send it: the front stops accepting and answers
the writes still waiting on the bus; a worker finishes the job in hand before it exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.health import live_workers
from tests.support.servers import free_port, wait_for_port

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "graceful-" + "x" * 32


def _env(tmp_path: Path, redis_url: str, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env.update(SCIM_REDIS_URL=redis_url, SCIM_QUEUE_NAME=queue, SCIM_VAR_DIR=str(tmp_path), SCIM_TOKEN=TOKEN,
               SCIM_DATABASE_URL=f"sqlite:///{tmp_path / 'scimbus.db'}", SCIM_LOG_LEVEL="WARNING")
    return env


def _start_pool(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.support.job_functions", "worker", "--processes", "1",
                             "--metrics-port", str(free_port())], cwd=ROOT, env=env, start_new_session=True)


def _wait_for_worker(redis_conn, queue: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while live_workers(redis_conn, queue) == 0:
        assert proc.poll() is None, "the worker pool exited"
        assert time.monotonic() < deadline, "no worker registered"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_a_worker_finishes_the_job_in_hand_on_sigterm(redis_conn, redis_url, tmp_path):
    queue = f"graceful-{uuid.uuid4().hex[:8]}"
    pool = _start_pool(_env(tmp_path, redis_url, queue))
    try:
        _wait_for_worker(redis_conn, queue, pool)
        bus = Bus(redis_conn, queue, job_timeout=10, function="tests.services.slow_jobs.slow_echo")
        write = WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                         resource_id=str(uuid.uuid4()), body={}, meta={"seconds": "1.5"})
        bus.submit_batch(write.job_id, [write])
        deadline = time.monotonic() + 10
        while redis_conn.llen(f"rq:queue:{queue}"):  # picked up: the job is in hand
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)
        os.kill(pool.pid, signal.SIGTERM)
        assert bus.await_batch(write.job_id, 1, timeout=10)[0].status == 201
        assert pool.wait(20) == 0
    finally:
        _stop(pool)


def test_the_front_answers_the_writes_it_is_waiting_on_after_sigterm(redis_conn, redis_url, tmp_path):
    from libs.store.migrate import upgrade

    queue = f"graceful-{uuid.uuid4().hex[:8]}"
    env = _env(tmp_path, redis_url, queue)
    upgrade(env["SCIM_DATABASE_URL"])
    port = free_port()
    front = subprocess.Popen([sys.executable, "-m", "services.cli", "front", "--bind", f"127.0.0.1:{port}",
                              "--workers", "1", "--threads", "4"], cwd=ROOT, env=env, start_new_session=True)
    pool = None
    try:
        wait_for_port(port, timeout=30, proc=front)
        answers: list[httpx.Response] = []
        user = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"g-{uuid.uuid4().hex[:8]}"}
        request = threading.Thread(target=lambda: answers.append(httpx.post(
            f"http://127.0.0.1:{port}/scim/Users", json=user, timeout=60,
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/scim+json"})))
        request.start()
        deadline = time.monotonic() + 10
        while not redis_conn.llen(f"rq:queue:{queue}"):  # enqueued: the front now waits
            assert time.monotonic() < deadline
            time.sleep(0.02)
        os.kill(front.pid, signal.SIGTERM)
        time.sleep(1.0)
        # It serves nothing new (the kernel may still complete a handshake on the worker's
        # inherited listening socket, but no one reads it) …
        with pytest.raises((httpx.ConnectError, httpx.ReadTimeout)):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert front.poll() is None  # … but is still waiting for its write
        pool = _start_pool(env)
        request.join(30)
        assert [a.status_code for a in answers] == [201]
        assert answers[0].json()["userName"] == user["userName"]
        assert front.wait(20) == 0
    finally:
        _stop(front)
        if pool is not None:
            os.killpg(pool.pid, signal.SIGTERM)
            try:
                pool.wait(20)
            finally:
                _stop(pool)
