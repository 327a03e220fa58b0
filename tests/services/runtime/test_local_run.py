"""The local run's contract: Ctrl-C or SIGTERM stops every process; data survives a restart."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.services.test_entra_flows import create_user
from tests.support.stack import descendants, running_stack, stop

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_local_run_leaves_no_process_behind(tmp_path, sig):
    with running_stack(tmp_path) as stack:
        # The gateway proxies to the front and the reader over unix sockets in a folder of its own.
        conf = (tmp_path / "nginx" / "scimbus.conf").read_text()
        sockets = {Path(p).parent for p in re.findall(r"server unix:(\S+\.sock)[ ;]", conf)}
        assert len(sockets) == 1 and next(iter(sockets)).is_dir(), conf
        left = stop(stack, sig)
        assert left == []
        assert stack.proc.returncode is not None
        assert not next(iter(sockets)).exists()


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)  # the store plays no part
def test_the_local_runs_redis_refuses_whoever_lacks_its_generated_password(stack):
    """Anyone who could write to Redis could run code in the workers (issue 16): the local run's
    Redis takes only clients that have the password it generated, kept in a file only its
    owner reads and never on a command line (which every local user can read)."""
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError
    from redis.retry import Retry

    password_file = stack.var_dir / "redis-password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 32
    once = {"socket_connect_timeout": 2, "retry": Retry(NoBackoff(), 0)}  # redis-py retries a refused AUTH for 4 s
    with pytest.raises(AuthenticationError):
        Redis(host="127.0.0.1", port=stack.redis_port, **once).rpush("rq:queue:scim-writes", "planted")
    with pytest.raises(AuthenticationError):
        Redis(host="127.0.0.1", port=stack.redis_port, password="guess", **once).ping()
    assert stack.redis().ping()  # every role has it: the stack answers writes
    from bench.procs import _cmdline

    assert not [pid for pid in descendants(stack.proc.pid) if password in " ".join(_cmdline(pid))]


def test_users_survive_a_restart_of_the_whole_stack(tmp_path):
    with running_stack(tmp_path) as stack, stack.client() as client:
        user = create_user(client)
    with running_stack(tmp_path) as stack, stack.client() as client:
        got = client.get(f"/Users/{user['id']}")
        assert got.status_code == 200
        assert got.json()["userName"] == user["userName"]


def test_metrics_are_served_by_each_service_but_not_through_the_gateway(tmp_path):
    import httpx

    with running_stack(tmp_path) as stack, stack.client() as client:
        create_user(client)
        client.get("/Users", params={"count": 1})
        front = httpx.get(f"http://127.0.0.1:{stack.ports['SCIM_FRONT_PORT']}/metrics").text
        reader = httpx.get(f"http://127.0.0.1:{stack.ports['SCIM_READER_PORT']}/metrics").text
        worker = httpx.get(f"http://127.0.0.1:{stack.ports['SCIM_WORKER_METRICS_PORT']}/metrics").text
        assert ('scim_http_requests_total{endpoint="/scim/<endpoint>",method="POST",resource_type="User",'
                'service="front",status="201"}') in front
        assert "scim_queue_depth" in front
        assert 'service="reader"' in reader
        assert 'scim_jobs_total{op="create",outcome="ok",resource_type="User"}' in worker
        assert httpx.get(f"http://127.0.0.1:{stack.port}/metrics").status_code == 404


def test_reads_go_on_while_a_reader_process_is_killed_and_replaced(tmp_path):
    """Each reader process has a socket of its own in the gateway's list (least_conn): a dead
    one's socket refuses and nginx tries the next, and the replacement takes its path."""
    from bench.procs import _cmdline, descendants, role_of

    with running_stack(tmp_path) as stack, stack.client() as client:
        conf = (tmp_path / "nginx" / "scimbus.conf").read_text()
        assert len(re.findall(r"server unix:\S+/reader-\d\.sock", conf)) == 2, conf
        user = create_user(client)
        tree = descendants(stack.proc.pid)
        arbiter = next(pid for pid, _ in tree if role_of(_cmdline(pid)) == "reader" and "gunicorn" in _cmdline(pid))
        workers = [pid for pid, parent in tree if parent == arbiter]
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        statuses, deadline = [], time.monotonic() + 4
        while time.monotonic() < deadline:
            statuses.append(client.get(f"/Users/{user['id']}").status_code)
        assert set(statuses) == {200}, statuses
        replaced = [pid for pid, parent in descendants(stack.proc.pid) if parent == arbiter]
        assert len(replaced) == 2 and workers[0] not in replaced


def test_the_local_run_says_when_it_is_ready_and_then_takes_a_write_at_once(tmp_path):
    """``make run`` prints a line once every role answers its probe; before it, a write could
    get 502 from the gateway (a service still loading) or 503 (no worker on the queue yet)."""
    with running_stack(tmp_path, wait_ready=False) as stack:
        deadline = time.monotonic() + 90
        while "scimbus: ready after" not in stack.log():
            assert stack.proc.poll() is None and time.monotonic() < deadline, stack.log()[-3000:]
            time.sleep(0.05)
        with stack.client() as client:
            made = client.post("/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                               "userName": "first.write@contoso.com", "active": True})
            assert made.status_code == 201, made.text
            assert client.get(f"/Users/{made.json()['id']}").status_code == 200
        log = stack.log()
        assert log.index("scimbus: starting, to serve") < log.index("scimbus: ready after")
        assert "not ready after" not in log


def test_stopping_the_local_run_answers_the_write_it_holds_and_stops_redis_last(tmp_path):
    """Ctrl-C stops the roles in the order they depend on each other: the gateway takes no new
    request and waits for its answers, then the front and reader go, then the workers, then
    Redis. A write still waiting for a worker when the stop begins gets its 201."""
    from concurrent.futures import ThreadPoolExecutor

    from rq import Queue, Worker

    from tests.services.test_entra_flows import entra_user

    with running_stack(tmp_path, workers=2) as stack:
        deadline = time.monotonic() + 20
        writes = Queue("scim-writes", connection=stack.redis())
        while len(rq_workers := [w.pid for w in Worker.all(queue=writes)]) < 2:  # both, or one would take it
            assert time.monotonic() < deadline, rq_workers
            time.sleep(0.05)
        for pid in rq_workers:
            os.kill(pid, signal.SIGSTOP)
        with ThreadPoolExecutor(1) as pool, stack.client() as client:
            body = entra_user()
            jobs_before = set(stack.redis().keys("rq:job:*"))
            answer = pool.submit(client.post, "/Users", json=body)
            deadline = time.monotonic() + 20
            # The front has queued the write (a stopped worker may hold it, popped, in its socket).
            while not set(stack.redis().keys("rq:job:*")) - jobs_before:
                assert time.monotonic() < deadline and not answer.done(), answer
                time.sleep(0.05)
            stack.proc.send_signal(signal.SIGINT)
            while "SIGINT received" not in stack.log():
                assert time.monotonic() < deadline, stack.log()[-3000:]
                time.sleep(0.05)
            time.sleep(0.5)  # the stop has begun: only now may a worker take the write
            for pid in rq_workers:
                os.kill(pid, signal.SIGCONT)
            made = answer.result(timeout=60)
        assert made.status_code == 201, made.text
        assert stop(stack) == []
        log = stack.log()
    stopped = re.findall(r"\| (\w+) stopped \(rc=", log)
    assert sorted(stopped) == ["deliverer", "front", "gateway", "reader", "redis", "sweeper", "worker"], log
    assert stopped[0] == "gateway" and stopped[-1] == "redis", stopped
    assert set(stopped[1:3]) == {"front", "reader"}, stopped
    assert "Traceback" not in log and "sending SIGKILL" not in log, log[-4000:]
    with running_stack(tmp_path) as stack, stack.client() as client:
        listed = client.get("/Users", params={"filter": f'userName eq "{body["userName"]}"'}).json()
        assert [u["id"] for u in listed["Resources"]] == [made.json()["id"]]
