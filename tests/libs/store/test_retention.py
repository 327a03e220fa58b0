"""Retention purges what grows with every write, and only what nothing needs any more.

Each test fills the store as the worker and the deliverer leave it, then purges at a
moment chosen past (or short of) a window, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from libs.bus import defaults
from libs.config import load_settings
from libs.store import deliveries as ledger
from libs.store.directory import DirectoryStore
from libs.store.retention import BATCH, Windows, job_life, purge, utcnow
from libs.store.tables import (
    applied_writes, changes, dead_letters, delivery_cursors, delivery_state, rejected_writes, resources,
)

pytestmark = pytest.mark.db

DAY = timedelta(days=1)
WINDOWS = Windows(applied=job_life(10), changes=30 * DAY, audit=30 * DAY)


def _write(store: DirectoryStore, job_id: str, resource_id: str, op: str = "create", version: int = 1) -> None:
    with store.transaction() as conn:
        store.record(conn, [{"app": "default", "job_id": job_id, "request_id": None,
                             "result": {"status": 201, "body": {"id": resource_id}},
                             "change": {"resource_type": "User", "resource_id": resource_id, "op": op,
                                        "version": version}}])


def _count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _seqs(engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(changes.c.seq)).scalars())


def test_the_job_life_is_derived_from_the_bus_constants():
    life = job_life(10).total_seconds()
    assert life >= defaults.RETRIES * (defaults.QUEUED_TTL + 2 * 10)
    assert life < 3600  # so applied_writes holds at most an hour of writes
    assert job_life(20) > job_life(10)


def test_a_rerun_within_the_job_life_still_finds_its_recorded_answer(engine):
    store = DirectoryStore(engine)
    _write(store, "job-1", "u1")
    life = job_life(load_settings({}).job_timeout)
    report = purge(engine, Windows(life, 30 * DAY, 30 * DAY), [], now=utcnow() + life - timedelta(minutes=1))
    assert report.purged["applied_writes"] == 0
    with engine.connect() as conn:
        assert store.applied_results(conn, ["job-1"]) == {"job-1": {"status": 201, "body": {"id": "u1"}}}

    purge(engine, Windows(life, 30 * DAY, 30 * DAY), [], now=utcnow() + life + timedelta(seconds=1))
    with engine.connect() as conn:
        assert store.applied_results(conn, ["job-1"]) == {}


def test_applied_writes_go_in_batches_past_the_job_life(engine):
    store = DirectoryStore(engine)
    with store.transaction() as conn:
        store.record(conn, [{"app": "default", "job_id": f"j{i}", "request_id": None, "result": {"status": 204},
                             "change": None} for i in range(BATCH * 2 + 5)])
    report = purge(engine, WINDOWS, [], now=utcnow() + WINDOWS.applied + timedelta(seconds=1))
    assert report.purged["applied_writes"] == BATCH * 2 + 5 and report.complete
    assert _count(engine, applied_writes) == 0


def test_handled_old_changes_go_and_the_newest_always_stays(engine):
    store = DirectoryStore(engine)
    for i in range(1, 6):
        _write(store, f"j{i}", f"u{i}")
    later = utcnow() + WINDOWS.changes + timedelta(seconds=1)
    purge(engine, WINDOWS, [], now=later)
    # seq 5 stays: SQLite would hand its seq out again to the next change
    assert _seqs(engine) == [5]


def test_changes_a_connector_has_not_handled_stay_however_old(engine):
    store = DirectoryStore(engine)
    for i in range(1, 6):
        _write(store, f"j{i}", f"u{i}")
    with engine.begin() as conn:
        conn.execute(insert(delivery_cursors), [{"connector": "ldap", "seq": 2}, {"connector": "hook", "seq": 4}])
    later = utcnow() + WINDOWS.changes + timedelta(seconds=1)
    purge(engine, WINDOWS, ["ldap", "hook"], now=later)
    assert _seqs(engine) == [3, 4, 5]  # ldap has handled up to 2 only
    purge(engine, WINDOWS, ["ldap", "hook", "new"], now=later)
    assert _seqs(engine) == [3, 4, 5]  # a connector without a cursor has handled nothing


def test_young_changes_stay(engine):
    store = DirectoryStore(engine)
    for i in range(1, 4):
        _write(store, f"j{i}", f"u{i}")
    purge(engine, WINDOWS, [], now=utcnow() + WINDOWS.changes - timedelta(minutes=1))
    assert _seqs(engine) == [1, 2, 3]


def test_the_audit_window_is_a_floor_for_changes():
    settings = load_settings({}, change_retention="1h", audit_retention_days=365)
    assert Windows.from_settings(settings).changes == timedelta(days=365)
    settings = load_settings({}, change_retention="2h", audit_retention_days=0)
    assert Windows.from_settings(settings).changes == timedelta(hours=2)


def test_rejected_writes_go_past_the_audit_window(engine):
    with engine.begin() as conn:
        conn.execute(insert(rejected_writes), [
            {"app": "default", "resource_type": "User", "resource_id": "x", "op": "replace", "job_id": "j",
             "outcome": "404", "at": utcnow() - 40 * DAY},
            {"app": "default", "resource_type": "User", "resource_id": "y", "op": "replace", "job_id": "k",
             "outcome": "409", "at": utcnow() - DAY}])
    purge(engine, WINDOWS, [])
    with engine.connect() as conn:
        assert list(conn.execute(select(rejected_writes.c.resource_id)).scalars()) == ["y"]


def _state(conn, resource_id: str, *, present: bool, delivered_seq: int, attempts: int = 0, dead_seq: int = 0,
           age: timedelta = 40 * DAY) -> None:
    conn.execute(insert(delivery_state).values(
        connector="hook", app="default", resource_type="User", resource_id=resource_id, delivered_seq=delivered_seq,
        delivered_version=1, present=present, dead_seq=dead_seq, attempts=attempts,
        last_error="boom" if attempts else None, updated_at=utcnow() - age))


def _dead(conn, resource_id: str, seq: int, *, retried: bool = False) -> None:
    conn.execute(insert(dead_letters).values(
        connector="hook", app="default", resource_type="User", resource_id=resource_id, seq=seq, version=1,
        reason="410 Gone", attempts=5, at=utcnow() - 40 * DAY, retried_at=utcnow() - 39 * DAY if retried else None))


def test_the_ledger_of_gone_resources_goes_and_what_is_still_needed_stays(engine):
    store = DirectoryStore(engine)
    _write(store, "j-pending", "pending-user")  # a change the hook has not delivered
    with engine.begin() as conn:
        conn.execute(insert(delivery_cursors).values(connector="hook", seq=0))
        _state(conn, "gone", present=False, delivered_seq=7)          # removed, delivered: goes
        _state(conn, "gone-young", present=False, delivered_seq=8, age=DAY)  # removed recently: stays
        _state(conn, "failing", present=False, delivered_seq=3, attempts=2)  # a retry is due: stays
        _state(conn, "pending-user", present=False, delivered_seq=0)  # its change is pending: stays
        _state(conn, "dead", present=True, delivered_seq=2, dead_seq=9)
        _dead(conn, "dead", 9)                                          # unresolved: stays, and its ledger
        _state(conn, "healed", present=False, delivered_seq=12)
        _dead(conn, "healed", 10)                                       # superseded by seq 12: goes
        _dead(conn, "requeued", 11, retried=True)                       # re-queued by an operator: goes
        conn.execute(insert(resources).values(
            app="default", resource_type="User", id="live", name="live", name_key="live", created=utcnow(),
            last_modified=utcnow(), version=1, doc="{}"))
        _state(conn, "live", present=False, delivered_seq=4)           # the resource exists: stays
    report = purge(engine, WINDOWS, ["hook"])
    with engine.connect() as conn:
        states = sorted(conn.execute(select(delivery_state.c.resource_id)).scalars())
        dead = sorted(conn.execute(select(dead_letters.c.resource_id)).scalars())
        assert ledger.latest_change(conn, ledger.ResourceKey("default", "User", "pending-user")) is not None
    assert states == ["dead", "failing", "gone-young", "live", "pending-user"]
    assert dead == ["dead"]
    assert report.purged["delivery_state"] == 2 and report.purged["dead_letters"] == 2


def test_a_spent_budget_leaves_the_rest_for_the_next_round(engine):
    store = DirectoryStore(engine)
    with store.transaction() as conn:
        store.record(conn, [{"app": "default", "job_id": f"j{i}", "request_id": None, "result": {"status": 204},
                             "change": None} for i in range(BATCH + 1)])
    report = purge(engine, WINDOWS, [], budget=0, now=utcnow() + WINDOWS.applied * 2)
    assert not report.complete and report.total == 0
    assert _count(engine, applied_writes) == BATCH + 1


def test_the_delivery_log_goes_with_the_changes_window(engine):
    from libs.store.tables import delivery_log

    with engine.begin() as conn:
        conn.execute(insert(delivery_log), [
            {"connector": "hook", "app": "default", "resource_type": "User", "resource_id": rid, "seq": seq,
             "outcome": "delivered", "at": utcnow() - age} for rid, seq, age in (("old", 1, 40 * DAY),
                                                                                   ("young", 2, DAY))])
    report = purge(engine, WINDOWS, ["hook"])
    assert report.purged["delivery_log"] == 1
    with engine.connect() as conn:
        assert list(conn.execute(select(delivery_log.c.resource_id)).scalars()) == ["young"]
