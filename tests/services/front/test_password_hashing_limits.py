"""Password hashing as a denial of service (issue 16, medium 8), against the front with a real
Redis: argon2id costs 64 MiB and ~0.1 s a hash, and one write could carry a thousand.

No worker listens here: a write that got past the checks is hashed, queued and answered 503
after SCIM_WRITE_TIMEOUT, so a 400, 413 or 429 shows it was refused before being queued."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from libs.scim import passwords

pytestmark = pytest.mark.redis

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
HASH_MIB = 64


def _front(redis_url: str, tmp_path: Path, **overrides):
    from libs.store.migrate import upgrade
    from services.front.app import create_app

    database = f"sqlite:///{tmp_path / 'scimbus.db'}"  # the front reads credentials only
    upgrade(database)
    return create_app({"redis_url": redis_url, "database_url": database, "var_dir": tmp_path, "token": TOKEN,
                       "write_timeout": 0.5, **overrides})


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.get_json()
    assert body["status"] == str(status)
    return body


def test_a_patch_setting_the_password_several_times_is_400_before_any_hash(redis_url, redis_conn, tmp_path):
    client = _front(redis_url, tmp_path).test_client()
    operations = [{"op": "replace", "path": "password", "value": f"pw-{i}"} for i in range(5)]
    body = _error(client.patch("/scim/Users/x", json={"schemas": [PATCH_OP], "Operations": operations},
                               headers=AUTH), 400)
    assert body["scimType"] == "invalidValue" and "password once" in body["detail"]
    # Path-less values count too, in any spelling of the name.
    both = [{"op": "replace", "value": {"password": "a", USER: {"PASSWORD": "b"}}}]
    _error(client.patch("/scim/Users/x", json={"schemas": [PATCH_OP], "Operations": both}, headers=AUTH), 400)
    assert redis_conn.llen("rq:queue:scim-writes") == 0


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_many_concurrent_password_writes_hash_a_few_at_a_time(redis_url, redis_conn, tmp_path):
    # Sixteen writes with a password at once (a front process's threads): unbounded, sixteen
    # 64 MiB hashes ran together (1 GiB); the front's default allows two at a time.
    app = _front(redis_url, tmp_path)
    statuses: list[int] = []
    start = threading.Barrier(16)

    def write(i: int) -> None:
        client = app.test_client()
        start.wait()
        statuses.append(client.post("/scim/Users", json={"schemas": [USER], "userName": f"pw{i}",
                                                          "password": f"S3cret-{i}"}, headers=AUTH).status_code)

    Path("/proc/self/clear_refs").write_text("5")  # restart the peak-memory count from here
    before = _peak_rss_mib()
    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grew = _peak_rss_mib() - before
    assert grew < 4 * HASH_MIB, f"peak memory grew {grew:.0f} MiB while hashing"
    assert len(statuses) == 16 and set(statuses) <= {503, 429}  # queued (no worker here), or told to wait


def test_a_write_that_finds_every_hashing_slot_taken_is_429_with_retry_after(redis_url, redis_conn, tmp_path):
    client = _front(redis_url, tmp_path, password_hashes=1).test_client()
    slots = passwords._slots
    assert slots.size == 1
    slots.semaphore.acquire()  # a long hash in another thread
    try:
        response = client.post("/scim/Users", json={"schemas": [USER], "userName": "waits", "password": "S3cret"},
                               headers=AUTH)
        _error(response, 429)
        assert int(response.headers["Retry-After"]) > 0
        assert "at most 1 passwords at once" in response.get_json()["detail"]
    finally:
        slots.semaphore.release()
    assert redis_conn.llen("rq:queue:scim-writes") == 0


def _bulk_create(i: int, password: str | None = "S3cret") -> dict:
    data = {"schemas": [USER], "userName": f"bulk{i}", **({"password": password} if password else {})}
    return {"method": "POST", "path": "/Users", "bulkId": f"b{i}", "data": data}


def test_a_bulk_request_carrying_more_passwords_than_allowed_is_413_before_any_hash(redis_url, redis_conn, tmp_path):
    client = _front(redis_url, tmp_path).test_client()
    attack = [_bulk_create(i) for i in range(30)]  # the review's shape: one password per operation
    body = _error(client.post("/scim/Bulk", json={"schemas": [BULK], "Operations": attack}, headers=AUTH), 413)
    assert "30 passwords" in body["detail"] and "maximum is 20" in body["detail"]
    assert redis_conn.llen("rq:queue:scim-writes") == 0


def test_a_bulk_patch_operation_setting_the_password_twice_fails_alone(redis_url, redis_conn, tmp_path):
    client = _front(redis_url, tmp_path, bulk_max_passwords=5).test_client()
    twice = {"method": "PATCH", "path": "/Users/x", "data": {"schemas": [PATCH_OP], "Operations": [
        {"op": "replace", "path": "password", "value": "a"}, {"op": "replace", "path": "password", "value": "b"}]}}
    response = client.post("/scim/Bulk", json={"schemas": [BULK], "failOnErrors": 1,
                                               "Operations": [twice, _bulk_create(1)]}, headers=AUTH)
    assert response.status_code == 200, response.text
    (first,) = response.get_json()["Operations"]  # failOnErrors=1: nothing after the first error
    assert first["status"] == "400" and first["response"]["scimType"] == "invalidValue"
    assert redis_conn.llen("rq:queue:scim-writes") == 0
