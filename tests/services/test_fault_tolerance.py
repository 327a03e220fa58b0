"""Workers killed with SIGKILL mid-load: every acknowledged write is stored exactly once.

A job's idempotency record is committed with its change, so a job re-run after its worker
died answers its recorded result instead of applying again; the pool replaces the dead
worker and RQ's maintenance re-queues the abandoned job while the front is still waiting.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from tests.services.conftest import unique
from tests.services.test_entra_flows import entra_user
from tests.support.stack import running_stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("fault"), workers=2) as s:
        yield s


def _load(stack, prefix: str, count: int, results: dict, threads: int = 6) -> list[threading.Thread]:
    names = [f"{prefix}-{i:04d}@contoso.com" for i in range(count)]
    lock = threading.Lock()

    def run(chunk):
        with stack.client() as client:
            for name in chunk:
                try:
                    status = client.post("/Users", json=entra_user(name)).status_code
                except Exception as exc:  # a dropped connection is an unacknowledged write
                    status = repr(exc)
                with lock:
                    results[name] = status

    workers = [threading.Thread(target=run, args=(names[i::threads],)) for i in range(threads)]
    for t in workers:
        t.start()
    return workers


def test_killing_workers_mid_load_loses_no_acknowledged_write_and_applies_none_twice(fault_stack):
    prefix = unique("kill")
    results: dict[str, object] = {}
    load = _load(fault_stack, prefix, 240, results)
    kills = 0
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in load) and kills < 6 and time.monotonic() < deadline:
        time.sleep(random.uniform(0.3, 0.8))
        pids = fault_stack.worker_pids()
        if pids:
            try:
                os.kill(random.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:  # a registry entry of a worker killed a moment ago
                pass
    for t in load:
        t.join(120)
    assert kills >= 3, "the load finished before workers could be killed"
    with fault_stack.client() as client:
        stored = client.get("/Users", params={"filter": f'userName sw "{prefix}"', "count": 1000}).json()
    names = [r["userName"] for r in stored["Resources"]]
    assert len(names) == len(set(names)), "a write was applied twice"
    acknowledged = {n for n, s in results.items() if s == 201}
    assert acknowledged <= set(names), f"acknowledged but lost: {sorted(acknowledged - set(names))[:5]}"
    for name, status in results.items():
        # Unacknowledged writes either happened or were answered with an error (503 to retry).
        assert status == 201 or name in names or status in (503, 409) or isinstance(status, str), (name, status)
    # The pool replaced every killed worker.
    deadline = time.monotonic() + 30
    while len(fault_stack.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert len(fault_stack.worker_pids()) >= 2


def test_a_job_run_twice_applies_once(fault_stack):
    """Re-enqueue a finished job under its own id: the worker answers the recorded result."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    with fault_stack.client() as client:
        created = client.post("/Users", json=entra_user()).json()
    redis = fault_stack.redis()
    changes_before = _changes(fault_stack, created["id"])
    queue = Queue("scim-writes", connection=redis, serializer=JSONSerializer)
    job_id = _job_id_for(fault_stack, created["id"])
    payload = {"job_id": job_id, "op": "create", "app": "default", "resource_type": "User",
               "resource_id": created["id"], "body": entra_user(created["userName"])}
    job = queue.enqueue("services.worker.jobs.apply_write", payload, job_id=job_id + "-replay")
    # the replay uses the original idempotency key inside the payload
    deadline = time.monotonic() + 30
    while job.get_status(refresh=True) not in ("finished", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job.return_value()["status"] == 201
    assert job.return_value()["body"]["id"] == created["id"]
    assert _changes(fault_stack, created["id"]) == changes_before == 1


def _db(stack):
    from sqlalchemy import create_engine

    return create_engine(f"sqlite:///{stack.var_dir / 'scimbus.db'}")


def _changes(stack, resource_id: str) -> int:
    from sqlalchemy import text

    with _db(stack).connect() as conn:
        return conn.execute(text("SELECT count(*) FROM changes WHERE resource_id = :r"),
                            {"r": resource_id}).scalar_one()


def _job_id_for(stack, resource_id: str) -> str:
    from sqlalchemy import text

    with _db(stack).connect() as conn:
        return conn.execute(text("SELECT job_id FROM changes WHERE resource_id = :r AND op = 'create'"),
                            {"r": resource_id}).scalar_one()
