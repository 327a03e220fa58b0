"""The reader on a PostgreSQL streaming replica: read-your-writes, and no failed read when it goes.

A primary and a hot standby made with pg_basebackup, both started by the test, the standby
delayed on purpose (``recovery_min_apply_delay``): Entra's pattern of writing and reading
at once never reads stale data, because the reader reads from the replica only once it has
replayed the app's last commit (recorded by the worker before the write was answered).
"""

from __future__ import annotations

import threading
import time

import pytest

from libs.store.directory import DirectoryStore
from libs.store.replicas import ReplicaSet, wal_position
from libs.store.session import create_engine_from_url
from tests.services.conftest import unique
from tests.services.test_entra_flows import entra_user
from tests.support.replica import primary_and_replica, wait_caught_up
from tests.support.stack import running_stack


@pytest.mark.servers
def test_a_replica_is_chosen_only_once_it_has_replayed_the_position_a_read_needs():
    from sqlalchemy import text

    with primary_and_replica(apply_delay_ms=1500) as (primary, replica):
        primary_engine = create_engine_from_url(primary.url)
        replica_engine = create_engine_from_url(replica.url, read_only=True)
        replicas = ReplicaSet(DirectoryStore(primary_engine), [replica_engine], wait=0.1, skip=0.5)
        try:
            assert replicas.choose(0) is not None, "a read needing no write goes to the replica"
            assert replicas.choose(None) is None, "an unknown position reads the primary"
            with primary_engine.begin() as conn:
                conn.execute(text("CREATE TABLE written (id int)"))
            position = wal_position(primary_engine)
            started = time.monotonic()
            assert replicas.choose(position) is None, "a replica 1.5 s behind must not serve the write's reader"
            assert time.monotonic() - started < 1.0, "the wait for the replica is bounded"
            assert replicas.choose(0) is None, "a lagging replica is skipped for a while"
            wait_caught_up(primary, replica)
            time.sleep(0.6)  # the skip is over
            chosen = replicas.choose(position)
            assert chosen is not None and chosen.replayed >= position
        finally:
            primary_engine.dispose()
            replica_engine.dispose()


def _pairs(stack, prefix: str, count: int) -> list[str]:
    """Entra's pattern: create, then look the user up by userName at once; update, then GET."""
    stale = []
    with stack.client() as client:
        for i in range(count):
            name = f"{prefix}-{i}@contoso.com"
            created = client.post("/Users", json=entra_user(name))
            assert created.status_code == 201, created.text
            found = client.get("/Users", params={"filter": f'userName eq "{name}"'})
            assert found.status_code == 200, found.text
            if found.json()["totalResults"] != 1:
                stale.append(f"create {name}")
            user_id = created.json()["id"]
            patched = client.patch(f"/Users/{user_id}", json={
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [{"op": "replace", "path": "displayName", "value": f"renamed {i}"}]})
            assert patched.status_code in (200, 204), patched.text
            read = client.get(f"/Users/{user_id}")
            assert read.status_code == 200, read.text
            if read.json().get("displayName") != f"renamed {i}":
                stale.append(f"patch {name}")
    return stale


@pytest.mark.stack
def test_the_reader_on_a_delayed_replica_never_reads_stale_data_and_loses_no_read_when_it_stops(tmp_path):
    _delayed_replica_under_entra_pairs(tmp_path, pairs=15)


@pytest.mark.stack
@pytest.mark.slow
def test_hundreds_of_write_then_read_pairs_on_a_delayed_replica_never_read_stale_data(tmp_path):
    _delayed_replica_under_entra_pairs(tmp_path, pairs=300)


def _delayed_replica_under_entra_pairs(tmp_path, pairs: int) -> None:
    with primary_and_replica(apply_delay_ms=2000) as (primary, replica), \
            running_stack(tmp_path / "stack", database_url=primary.url,
                          extra_env={"SCIM_READ_DATABASE_URL": replica.url, "SCIM_REPLICA_WAIT_MS": "100",
                                     "SCIM_REPLICA_SKIP_SECONDS": "1"}) as stack:
        prefix = unique("replica")
        assert _pairs(stack, prefix, pairs) == [], "a read right after a write saw the replica's older state"

        # Caught up, the replica serves the reads by itself: the primary may even be away.
        wait_caught_up(primary, replica)
        primary.stop()
        try:
            with stack.client() as client:
                answer = client.get("/Users", params={"filter": f'userName sw "{prefix}"'})
            assert answer.status_code == 200, answer.text
            assert answer.json()["totalResults"] == pairs
        finally:
            primary.start()

        # The replica stops in the middle of reads: each one is answered, by the primary.
        failures: list = []
        done = threading.Event()

        def read_on() -> None:
            with stack.client() as client:
                while not done.is_set():
                    answer = client.get("/Users", params={"filter": f'userName sw "{prefix}"', "count": 5})
                    if answer.status_code != 200 or answer.json()["totalResults"] != pairs:
                        failures.append((answer.status_code, answer.text[:200]))

        readers = [threading.Thread(target=read_on) for _ in range(3)]
        for t in readers:
            t.start()
        time.sleep(1.0)
        replica.stop()
        time.sleep(2.0)
        assert _pairs(stack, unique("after-replica"), 3) == []
        done.set()
        for t in readers:
            t.join(30)
        assert failures == [], failures[:3]


@pytest.mark.servers
def test_a_reader_announcing_replicas_reads_the_primary_until_its_fence_covers_the_unrecorded_writes(redis_conn,
                                                                                                     redis_url):
    """Workers record positions only once a reader announces replicas: the writes before that
    have none, and the reader must not serve them from a replica until its fence covers them."""
    from sqlalchemy import text

    from libs.bus import commits
    from libs.config import Settings
    from libs.store.access import open_reader_store
    from services.reader.reads import Replicas

    def fenced_position(replicas: Replicas, written: int) -> int:
        started = time.monotonic()
        while (position := replicas.position("default")) is None:
            assert time.monotonic() - started < 10, "the fence never passed"
            time.sleep(0.02)
        waited = time.monotonic() - started
        assert commits.FENCE <= waited < commits.FENCE + 1.5, waited
        assert position >= written, "the fence's position covers the write no worker recorded"
        assert commits.latest(redis_conn, "hr") >= written, "the fence records every app the reader serves"
        return position

    with primary_and_replica(apply_delay_ms=3000) as (primary, replica):
        settings = Settings(database_url=primary.url, read_database_url=replica.url, redis_url=redis_url, apps="hr",
                            replica_skip_seconds=0.2)
        store = open_reader_store(settings)
        primary_engine = create_engine_from_url(primary.url)
        replicas, other_process = Replicas(settings, store), Replicas(settings, store)
        try:
            with primary_engine.begin() as conn:  # acknowledged while no reader announced replicas
                conn.execute(text("CREATE TABLE before_any_reader (id int)"))
            position = fenced_position(replicas, wal_position(primary_engine))
            assert redis_conn.exists(commits.READERS)
            assert replicas.choose(position) is None, "the replica, 3 s behind, has not replayed the write"
            assert other_process.position("default") == position, "a fenced announcement serves every process"

            wait_caught_up(primary, replica)
            time.sleep(0.3)  # the lagging replica's skip is over
            assert replicas.choose(replicas.position("default")) is not None

            # Redis restarted and lost everything: the announcement, the fence, the positions.
            redis_conn.flushdb()
            with primary_engine.begin() as conn:
                conn.execute(text("CREATE TABLE while_redis_was_empty (id int)"))
            written = wal_position(primary_engine)
            assert replicas.position("default") is None, "a read that finds no announcement reads the primary"
            position = fenced_position(replicas, written)
            assert replicas.choose(position) is None
        finally:
            replicas.fence.stop()
            other_process.fence.stop()
            primary_engine.dispose()
