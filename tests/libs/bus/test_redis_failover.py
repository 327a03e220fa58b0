"""The whole stack on Redis through Sentinel: ``kill -9`` the primary under a write load.

A Redis primary, its replica and three sentinels (``tests.support.sentinel``), the stack
(gateway, front, reader, workers, deliverer, sweeper) on ``SCIM_REDIS_URL=redis+sentinel://…``,
clients creating users without pause. The primary is killed; the sentinels promote the
replica after ``down-after-milliseconds`` (1 s) and an election; every role finds the new
primary by itself. Acknowledged writes are all stored, none twice; the unacknowledged ones
are either stored once or not at all (their clients got 503 or an error, and retry).
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.services.conftest import unique
from tests.services.test_entra_flows import entra_user
from tests.services.worker.test_fault_tolerance import _assert_no_loss_no_duplicate, _db
from tests.support.sentinel import sentinel_cluster
from tests.support.stack import running_stack

pytestmark = pytest.mark.stack

_ROLES = ("SCIM_FRONT_PORT", "SCIM_READER_PORT", "SCIM_WORKER_METRICS_PORT", "SCIM_DELIVERER_METRICS_PORT",
          "SCIM_SWEEPER_METRICS_PORT")


def _load(stack, prefix: str, threads: int, stop: threading.Event, log: list) -> list[threading.Thread]:
    """Clients creating users until ``stop``; ``log`` gets (sent, answered, userName, status)."""
    def run(n: int) -> None:
        i = 0
        with stack.client() as client:
            while not stop.is_set():
                name = f"{prefix}-{n}-{i:05d}@contoso.com"
                i += 1
                sent = time.monotonic()
                try:
                    status: object = client.post("/Users", json=entra_user(name)).status_code
                except Exception as exc:  # a dropped connection is an unacknowledged write
                    status = repr(exc)
                log.append((sent, time.monotonic(), name, status))

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    return workers


def _ready(stack, port_name: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{stack.ports[port_name]}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _failover_under_load(tmp_path, load_seconds_after: float) -> dict:
    with sentinel_cluster(down_after_ms=1000) as cluster, \
            running_stack(tmp_path / "stack", extra_env={"SCIM_REDIS_URL": cluster.url,
                                                          "SCIM_WRITE_TIMEOUT": "30"}) as stack:
        prefix = unique("failover")
        log: list = []
        stop = threading.Event()
        load = _load(stack, prefix, 4, stop, log)
        time.sleep(2.0)
        before = sum(1 for entry in log if entry[3] == 201)
        old = cluster.primary_port()
        killed_at = time.monotonic()
        cluster.kill_primary()
        deadline = killed_at + 60
        while time.monotonic() < deadline and not any(e[0] > killed_at and e[3] == 201 for e in list(log)):
            time.sleep(0.05)
        time.sleep(load_seconds_after)
        stop.set()
        for t in load:
            t.join(90)
        after = [e for e in log if e[0] > killed_at and e[3] == 201]
        assert after, f"no write succeeded within 60 s of the kill: {[e[3] for e in log[-5:]]}"
        first_write = min(e[1] for e in after) - killed_at
        results = {e[2]: e[3] for e in log}
        _assert_no_loss_no_duplicate(stack, prefix, results)
        with _db(stack).connect() as conn:
            from sqlalchemy import text

            twice = conn.execute(text("SELECT job_id FROM changes GROUP BY job_id HAVING count(*) > 1")).all()
        assert not twice, f"writes applied twice: {twice[:5]}"
        # Every role reconnects by itself: each answers its readiness probe on the new primary.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(_ready(stack, role) for role in _ROLES):
            time.sleep(0.5)
        assert all(_ready(stack, role) for role in _ROLES), {role: _ready(stack, role) for role in _ROLES}
        assert cluster.primary_port() not in (old, None)
        outcome = {"first_write_after_kill_s": round(first_write, 2), "acknowledged_before_kill": before,
                   "acknowledged": sum(1 for s in results.values() if s == 201),
                   "refused_503": sum(1 for s in results.values() if s == 503),
                   "failed_other": sum(1 for s in results.values() if s not in (201, 503))}
        print(f"\nRedis failover under load: {outcome}")
        return outcome


def test_killing_the_redis_primary_loses_no_acknowledged_write_and_writes_resume_within_seconds(tmp_path):
    outcome = _failover_under_load(tmp_path, load_seconds_after=2.0)
    # down-after-milliseconds 1000 plus the election, on a loaded 2-core host: generous.
    assert outcome["first_write_after_kill_s"] < 20


@pytest.mark.slow
def test_a_longer_load_across_a_redis_failover_stays_exact(tmp_path):
    outcome = _failover_under_load(tmp_path, load_seconds_after=20.0)
    assert outcome["first_write_after_kill_s"] < 20
