"""Liveness and readiness of each role: /healthz answers while the process runs; /readyz is
200 only while what the role needs answers (front: Redis and a live worker; reader: the
database; worker pool: Redis and the database), else 503 with the reason and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from redis import Redis
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from libs.health import live_workers
from libs.metrics.metrics import registry_for_scrape
from services.runtime.pool_probes import serve_probes
from tests.support.servers import free_port

DEAD_REDIS = "redis://127.0.0.1:1/0"


def _front(redis_url: str, tmp_path):
    from services.front.app import create_app

    return create_app({"redis_url": redis_url, "var_dir": tmp_path, "token": "t" * 32}).test_client()


@pytest.mark.redis
def test_the_front_is_not_ready_until_a_worker_is_alive_on_its_queue(redis_conn, redis_url, tmp_path):
    client = _front(redis_url, tmp_path)
    assert client.get("/healthz").status_code == 200
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert "no live worker on queue scim-writes" in answer.text

    worker = SimpleWorker(["scim-writes"], connection=redis_conn, serializer=JSONSerializer)
    worker.register_birth()
    try:
        assert live_workers(redis_conn, "scim-writes") == 1
        assert client.get("/readyz").status_code == 200
        # A worker killed without unregistering: its key expires with the heartbeat.
        redis_conn.delete(worker.key)
        assert live_workers(redis_conn, "scim-writes") == 0
        assert client.get("/readyz").status_code == 503
    finally:
        worker.register_death()


@pytest.mark.redis
def test_a_worker_of_another_queue_does_not_make_the_front_ready(redis_conn, redis_url, tmp_path):
    worker = SimpleWorker(["other-queue"], connection=redis_conn, serializer=JSONSerializer)
    worker.register_birth()
    try:
        assert _front(redis_url, tmp_path).get("/readyz").status_code == 503
    finally:
        worker.register_death()


@pytest.mark.servers
def test_the_front_is_not_ready_when_redis_is_unreachable(tmp_path):
    answer = _front(DEAD_REDIS, tmp_path).get("/readyz")
    assert answer.status_code == 503
    assert answer.text.startswith("redis unreachable: ConnectionError")
    assert "Traceback" not in answer.text


def test_the_reader_is_ready_when_its_database_answers_and_not_otherwise(tmp_path):
    from services.reader.app import create_app

    ok = create_app({"database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "var_dir": tmp_path, "token": "t" * 32})
    assert ok.test_client().get("/readyz").status_code == 200
    down = create_app({"database_url": "postgresql://scimbus@127.0.0.1:1/none?connect_timeout=1",
                       "var_dir": tmp_path, "token": "t" * 32})
    answer = down.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.text.startswith("database unreachable: OperationalError")
    assert down.test_client().get("/healthz").status_code == 200


def test_readiness_probes_are_not_counted_as_scim_requests(tmp_path):
    from services.reader.app import create_app

    app = create_app({"database_url": f"sqlite:///{tmp_path / 'db.sqlite'}", "var_dir": tmp_path, "token": "t" * 32})
    client = app.test_client()
    client.get("/readyz")
    client.get("/healthz")
    assert 'endpoint="/readyz"' not in client.get("/metrics").text


@pytest.mark.redis
def test_the_worker_pool_port_serves_metrics_liveness_and_readiness(redis_url, tmp_path):
    from libs.store.session import create_engine_from_url
    from libs.health import database_problem, redis_problem

    engine = create_engine_from_url(f"sqlite:///{tmp_path / 'db.sqlite'}")
    port = free_port()
    checks = (lambda: redis_problem(Redis.from_url(redis_url)), lambda: database_problem(engine))
    server = serve_probes(port, registry_for_scrape(), checks, addr="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").text == "ok\n"
        assert httpx.get(f"{base}/readyz").status_code == 200
        assert "# HELP scim_jobs_total" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/elsewhere").status_code == 404
    finally:
        server.shutdown()
        server.server_close()

    port = free_port()
    server = serve_probes(port, registry_for_scrape(), (lambda: redis_problem(Redis.from_url(DEAD_REDIS)),),
                          addr="127.0.0.1")
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert answer.status_code == 503
        assert answer.text.startswith("redis unreachable")
    finally:
        server.shutdown()
        server.server_close()


def _health(var_dir, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env["SCIM_VAR_DIR"] = str(var_dir)
    return subprocess.run([sys.executable, "-m", "services.cli", "health", *args], env=env,
                          capture_output=True, text=True, timeout=30)


def test_the_container_health_check_fails_before_any_role_has_started(tmp_path):
    result = _health(tmp_path)
    assert result.returncode == 1
    assert "no serving role has started here" in result.stderr


def test_the_container_health_check_fails_when_the_recorded_role_does_not_answer(tmp_path):
    (tmp_path / "probes").mkdir()
    (tmp_path / "probes" / "front").write_text(f"http://127.0.0.1:{free_port()}/readyz\n")
    result = _health(tmp_path, "front")
    assert result.returncode == 1
    assert "front:" in result.stderr and "unreachable" in result.stderr


@pytest.mark.stack
def test_every_role_of_the_running_stack_is_ready_and_its_container_health_check_passes(stack):
    for name in ("SCIM_FRONT_PORT", "SCIM_READER_PORT", "SCIM_WORKER_METRICS_PORT", "SCIM_DELIVERER_METRICS_PORT",
                 "SCIM_SWEEPER_METRICS_PORT"):
        port = stack.ports[name]
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, name
    result = _health(stack.var_dir)
    assert result.returncode == 0, result.stderr
    assert sorted(line.split(":")[0] for line in result.stdout.splitlines()) == ["deliverer", "front", "reader", "sweeper", "worker"]
    # The public gateway forwards /scim only: probes stay on the services' own ports.
    assert httpx.get(f"http://127.0.0.1:{stack.port}/readyz").status_code == 404


@pytest.mark.servers
def test_with_a_hung_redis_the_front_starts_and_reports_unready_within_the_probe_timeout(tmp_path):
    import socket
    import time

    with socket.socket() as silent:  # accepts connections (kernel backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        client = _front(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", tmp_path)  # builds without Redis
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.text.startswith("redis unreachable: TimeoutError")
        assert time.monotonic() - started < 3.5  # Kubernetes' probe timeout is 3 s
