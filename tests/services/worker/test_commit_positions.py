"""The worker records a batch's WAL position only while a reader announces replicas
(services/worker/positions.py): without one, no query and no Redis script per batch."""

from __future__ import annotations

import os
import time
import uuid

import pytest
from rq import Queue
from sqlalchemy import event

from libs.bus import commits
from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.bus.rq_adapter import ScimWorker
from libs.bus.serializer import OrjsonSerializer
from libs.config import load_settings
from libs.store.directory import DirectoryStore
from libs.store.replicas import wal_position
from libs.store.session import create_engine_from_url
from services.worker import context, positions

QUEUE = "test-positions"


@pytest.fixture
def worker(database_url, redis_conn, monkeypatch, tmp_path):
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no WAL position")
    monkeypatch.setenv("SCIM_DATABASE_URL", database_url)
    monkeypatch.setenv("SCIM_VAR_DIR", str(tmp_path))
    monkeypatch.setenv("SCIM_TOKEN", "unused")
    monkeypatch.setenv("SCIM_APPS", "hr")
    engine = create_engine_from_url(database_url)
    monkeypatch.setattr(context, "_context", context.WorkerContext(load_settings(), DirectoryStore(engine)))
    monkeypatch.setattr(context, "_pid", os.getpid())
    monkeypatch.setattr(positions, "_announced", commits.Announced())
    wal_queries: list[str] = []

    def count(conn, cursor, statement, parameters, context_, executemany):
        if "pg_current_wal_insert_lsn" in statement:
            wal_queries.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    records: list[dict] = []
    record = commits.record

    def spy(redis, by_app):
        records.append(dict(by_app))
        record(redis, by_app)

    monkeypatch.setattr(commits, "record", spy)
    bus = Bus(redis_conn, QUEUE, job_timeout=30)

    def write(*apps: str) -> None:
        """One batch of creates, applied by a real RQ worker as in the stack."""
        batch = uuid.uuid4().hex
        jobs = [WriteJob(job_id=uuid.uuid4().hex, op="create", app=app, resource_type="User",
                         resource_id=str(uuid.uuid4()), body={"userName": f"{uuid.uuid4().hex}@contoso.com"})
                for app in apps]
        bus.submit_batch(batch, jobs)
        ScimWorker([Queue(QUEUE, connection=redis_conn, serializer=OrjsonSerializer)], connection=redis_conn
                   ).work(burst=True, with_scheduler=False)
        assert [r.status for r in bus.await_batch(batch, len(jobs), timeout=10)] == [201] * len(jobs)

    yield write, wal_queries, records, engine
    engine.dispose()


def test_without_a_reader_on_replicas_a_batch_runs_no_wal_query_and_records_nothing(worker, redis_conn):
    write, wal_queries, records, _ = worker
    for _ in range(5):
        write("default", "hr")
    assert wal_queries == [] and records == []
    assert commits.latest(redis_conn, "default") == commits.latest(redis_conn, "hr") == 0


def test_once_a_reader_announces_replicas_each_batch_records_its_position(worker, redis_conn):
    write, wal_queries, records, engine = worker
    write("default")
    commits.announce(redis_conn, "reader")
    time.sleep(commits.CHECK_INTERVAL)  # what the worker saw before the announcement is kept that long
    write("default", "hr")
    write("hr")
    assert len(wal_queries) == 2
    assert [sorted(r) for r in records] == [["default", "hr"], ["hr"]]
    assert commits.latest(redis_conn, "default") > 0
    assert commits.latest(redis_conn, "hr") >= commits.latest(redis_conn, "default")
    assert commits.latest(redis_conn, "hr") <= wal_position(engine)
