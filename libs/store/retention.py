"""Retention: purge what grows with every write once nothing needs it any more.

- ``applied_writes`` holds each write's answer so a job RQ runs again answers the same. A
  re-run can only happen within the job's life (``job_life``: every retry's wait in the
  queue, run, abandonment and back-off, from ``libs.bus.defaults``), so a row older than that
  is never read again.
- ``changes`` is the outbox and the audit log of writes: a change goes once every
  configured connector has handled it (its delivery cursor passed it) and it is older than
  both ``SCIM_CHANGE_RETENTION`` and the audit's ``SCIM_AUDIT_RETENTION_DAYS``.
  ``rejected_writes`` (audit only) goes past the audit's window.
- The delivery ledger: the delivery log past the changes' window; a ``delivery_state`` row of a resource that is gone, handled, not
  failing, whose changes are all purged; a dead letter an operator re-queued, or one a later
  delivery of its resource superseded. Unresolved dead letters stay: they ask for an operator.

Every purge deletes at most ``BATCH`` rows per transaction, chosen by an indexed column,
so a lock is held for milliseconds and the writers go on between batches. ``purge`` takes
a time budget: the sweeper gives it a few seconds a round and the rest waits for the next
round; ``scimbus maintain`` runs it to the end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import Connection, Engine, and_, bindparam, delete, exists, false, func, select

from libs.bus import defaults
from libs.store.access import engine_of
from libs.store.directory import DirectoryStore
from libs.store.tables import (
    applied_writes, changes, dead_letters, delivery_cursors, delivery_log, delivery_state, rejected_writes,
    resources,
)

BATCH = 1000
"""Rows deleted per transaction: ~10-50 ms of lock on either dialect."""

C, S, D, A = changes.c, delivery_state.c, dead_letters.c, applied_writes.c


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def job_life(job_timeout: float) -> timedelta:
    """Longest a write job can still run after a run of it committed its writes.

    A run that committed may still be re-run when its worker died before RQ recorded the
    result: RQ notices the abandoned job (its timeout, ``ABANDONED_GRACE``, the next
    ``MAINTENANCE_INTERVAL``), waits its retry interval, and the job may wait in the queue
    (``QUEUED_TTL``) and run (its timeout) again; at most ``RETRIES`` times.
    """
    intervals = defaults.RETRY_INTERVALS
    # RQ repeats the last interval when there are more retries than intervals.
    waits = [intervals[min(i, len(intervals) - 1)] for i in range(defaults.RETRIES)]
    return timedelta(seconds=sum(job_timeout + defaults.ABANDONED_GRACE + defaults.MAINTENANCE_INTERVAL + wait
                                 + defaults.QUEUED_TTL + job_timeout for wait in waits))


@dataclass(frozen=True)
class Windows:
    applied: timedelta
    """How long ``applied_writes`` rows are kept (the job's life)."""
    changes: timedelta
    """Handled changes and ledger rows: the longer of the change retention and the audit's."""
    audit: timedelta
    """``rejected_writes``: the audit's retention."""

    @classmethod
    def from_settings(cls, settings: Any) -> Windows:
        audit = timedelta(days=settings.audit_retention_days)
        return cls(applied=job_life(settings.job_timeout),
                   changes=max(timedelta(seconds=settings.change_retention_seconds), audit), audit=audit)


def connector_names(settings: Any) -> list[str]:
    """The enabled connectors of the config file: those whose cursors say what is handled."""
    return [name for name, spec in (settings.file.get("connectors") or {}).items() if spec.get("enabled", True)]


@dataclass
class Report:
    purged: dict[str, int] = field(default_factory=dict)
    complete: bool = True
    """False when the time budget ran out before every purge was done."""

    def add(self, table: str, count: int) -> None:
        self.purged[table] = self.purged.get(table, 0) + count

    @property
    def total(self) -> int:
        return sum(self.purged.values())


class _Budget:
    def __init__(self, seconds: float | None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def left(self) -> bool:
        return self.deadline is None or time.monotonic() < self.deadline


def _batches(engine: Engine, budget: _Budget, step) -> tuple[int, bool]:
    """Run ``step(conn)`` (deletes up to BATCH rows, returns how many) in one transaction
    each until a batch comes back short or the budget is spent; (rows, finished)."""
    total = 0
    while budget.left():
        # A writer's transaction: on SQLite it queues on the writers' lock and takes the write
        # lock at BEGIN; a plain BEGIN that reads and then deletes fails with "database is
        # locked" whenever a worker committed in between.
        with DirectoryStore(engine).transaction() as conn:
            count = step(conn)
        total += count
        if count < BATCH:
            return total, True
    return total, False


def run_batches(engine: Engine, step) -> int:
    """``step`` in batches to the end; the rows it deleted."""
    return _batches(engine, _Budget(None), step)[0]


def _delete_keys(conn: Connection, table, column, keys: list) -> int:
    if keys:
        conn.execute(delete(table).where(column.in_(keys)))
    return len(keys)


def purge_applied_writes(conn: Connection, horizon: datetime) -> int:
    keys = list(conn.execute(select(A.job_id).where(A.applied_at < horizon).order_by(A.applied_at).limit(BATCH)
                             ).scalars())
    return _delete_keys(conn, applied_writes, A.job_id, keys)


def _handled_seq(conn: Connection, connectors: Iterable[str] | None) -> int | None:
    """The highest seq every connector has handled; None: no connector, every change is."""
    if connectors is None:  # every cursor the database holds (``scimbus audit --purge``)
        rows = list(conn.execute(select(delivery_cursors.c.seq)).scalars())
        return min(rows) if rows else None
    names = list(connectors)
    if not names:
        return None
    cursors = dict(conn.execute(select(delivery_cursors.c.connector, delivery_cursors.c.seq)
                                .where(delivery_cursors.c.connector.in_(names))).all())
    return min(cursors.get(name, 0) for name in names)


def purge_changes(conn: Connection, horizon: datetime, connectors: Iterable[str] | None) -> int:
    """Handled changes older than ``horizon``, by seq. The newest change always stays: SQLite
    gives a new row max(seq) + 1, and an emptied table would hand out seqs the delivery
    cursors and ledger already count as handled."""
    newest = conn.execute(select(func.max(C.seq))).scalar()
    if newest is None:
        return 0
    handled = _handled_seq(conn, connectors)
    top = newest - 1 if handled is None else min(handled, newest - 1)
    keys = list(conn.execute(select(C.seq).where(C.seq <= top, C.at < horizon).order_by(C.seq).limit(BATCH)
                             ).scalars())
    return _delete_keys(conn, changes, C.seq, keys)


def purge_rejected_writes(conn: Connection, horizon: datetime) -> int:
    r = rejected_writes.c
    keys = list(conn.execute(select(r.seq).where(r.at < horizon).order_by(r.at).limit(BATCH)).scalars())
    return _delete_keys(conn, rejected_writes, r.seq, keys)


_STATE_KEY = and_(S.connector == bindparam("k_connector"), S.app == bindparam("k_app"),
                  S.resource_type == bindparam("k_type"), S.resource_id == bindparam("k_id"))


def purge_delivery_state(conn: Connection, horizon: datetime) -> int:
    """Ledger rows of resources that are gone and whose every change is handled and purged
    (index ``ix_delivery_state_present_updated_at``, migration 0006)."""
    same_resource = and_(C.app == S.app, C.resource_type == S.resource_type, C.resource_id == S.resource_id)
    live = and_(resources.c.app == S.app, resources.c.resource_type == S.resource_type,
                resources.c.id == S.resource_id)
    unresolved = and_(D.connector == S.connector, D.app == S.app, D.resource_type == S.resource_type,
                      D.resource_id == S.resource_id, D.retried_at.is_(None), D.seq > S.delivered_seq)
    rows = conn.execute(
        select(S.connector, S.app, S.resource_type, S.resource_id)
        .where(S.present == false(), S.updated_at < horizon, S.attempts == 0,
               ~exists().where(same_resource), ~exists().where(live), ~exists().where(unresolved))
        .order_by(S.updated_at).limit(BATCH)).all()
    if rows:
        conn.execute(delete(delivery_state).where(_STATE_KEY),
                     [{"k_connector": r.connector, "k_app": r.app, "k_type": r.resource_type, "k_id": r.resource_id}
                      for r in rows])
    return len(rows)


def purge_delivery_log(conn: Connection, horizon: datetime) -> int:
    """Deliveries logged before the horizon: the changes they delivered go at the same age."""
    L = delivery_log.c
    keys = list(conn.execute(select(L.pk).where(L.at < horizon).order_by(L.at).limit(BATCH)).scalars())
    return _delete_keys(conn, delivery_log, L.pk, keys)


def purge_dead_letters(conn: Connection, horizon: datetime) -> int:
    """Dead letters past the horizon that need nobody any more: re-queued by an operator, or
    superseded by a later delivery of their resource, or of a resource no ledger row holds."""
    state = and_(S.connector == D.connector, S.app == D.app, S.resource_type == D.resource_type,
                 S.resource_id == D.resource_id)
    superseded = exists().where(state, S.delivered_seq > D.seq)
    keys = list(conn.execute(
        select(D.pk).where(D.at < horizon, D.retried_at.is_not(None) | superseded | ~exists().where(state))
        .order_by(D.pk).limit(BATCH)).scalars())
    return _delete_keys(conn, dead_letters, D.pk, keys)


def purge(store: DirectoryStore | Engine, windows: Windows, connectors: Iterable[str] | None, *,
          budget: float | None = None, now: datetime | None = None) -> Report:
    """Every purge in turn, in batches, within ``budget`` seconds (None: to the end).
    ``store``: the directory store (a service) or its engine (libs/store's own callers)."""
    engine = engine_of(store)
    now = now or utcnow()
    names = None if connectors is None else list(connectors)
    clock = _Budget(budget)
    report = Report()
    steps = (
        ("applied_writes", lambda conn: purge_applied_writes(conn, now - windows.applied)),
        ("changes", lambda conn: purge_changes(conn, now - windows.changes, names)),
        ("rejected_writes", lambda conn: purge_rejected_writes(conn, now - windows.audit)),
        ("delivery_log", lambda conn: purge_delivery_log(conn, now - windows.changes)),
        ("dead_letters", lambda conn: purge_dead_letters(conn, now - windows.changes)),
        ("delivery_state", lambda conn: purge_delivery_state(conn, now - windows.changes)),
    )
    for table, step in steps:
        count, finished = _batches(engine, clock, step)
        report.add(table, count)
        if not finished:
            report.complete = False
            break
    return report


def purge_with_settings(engine: Engine | DirectoryStore, settings: Any, *, budget: float | None = None) -> Report:
    return purge(engine, Windows.from_settings(settings), connector_names(settings), budget=budget)
