"""Engines from a database URL: SQLite tuned for several processes, PostgreSQL pooled.

SQLite runs in WAL mode with a busy timeout and foreign keys on, so the reader and several
worker processes share one file safely; writers take the lock up front (``BEGIN
IMMEDIATE``) so two writers never deadlock upgrading a read lock.

Writers on SQLite also queue on an OS file lock (``writer_lock``) before BEGIN: SQLite's
own busy handler polls with sleeps of up to 100 ms, which turned two contending workers
into ~80 writes/s; ``flock`` wakes the next writer the moment the lock is released.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

SQLITE_BUSY_TIMEOUT_MS = 30_000

_T = TypeVar("_T")


def create_engine_from_url(url: str, *, pool_size: int = 5, read_only: bool = False, ping: bool = True) -> Engine:
    """An engine for ``url``; ``read_only`` (the reader) runs PostgreSQL statements in
    autocommit: a SCIM read needs no multi-statement snapshot, and it saves the BEGIN and
    ROLLBACK round trips of every request.

    Pools ping a connection on checkout (``ping``), so work never starts on a connection
    that died with a database restart. The reader's does not (that ``SELECT 1`` was a
    round trip on every read): its reads retry once when a connection is found dead
    (``read_reconnecting``). Nor do the write workers' (a round trip per batch): a batch
    on a dead connection fails as a whole, and RQ runs it again a second later on a new one,
    its idempotency records making the second run exact."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                     "check_same_thread": False,
                                                     "isolation_level": None})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    options = {"isolation_level": "AUTOCOMMIT"} if read_only else {}
    return create_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=ping and not read_only,
                         pool_recycle=1800, **options)


def read_reconnecting(engine: Engine, read: Callable[[Connection], _T]) -> _T:
    """Run ``read`` on a pooled connection, once more on a fresh one when that connection
    turned out dead: every read on the reader's engine, whose pool does not ping.

    After a database restart the first statement on each stale connection fails instead;
    SQLAlchemy reports it as ``connection_invalidated`` and marks every connection pooled
    before it for replacement, so the retry gets a new one. ``read`` must only read (in
    autocommit or a transaction of its own): running it twice changes nothing. Still down:
    the error reaches the caller (503)."""
    try:
        with engine.connect() as conn:
            return read(conn)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    with engine.connect() as conn:
        return read(conn)


def _sqlite_on_connect(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn) -> None:
    # pysqlite's own transaction handling is off (isolation_level=None); take the write
    # lock at BEGIN so concurrent writers queue on busy_timeout instead of deadlocking.
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


class _WriterLock:
    """A per-process, per-database flock plus a thread lock (flock does not exclude threads
    sharing one file description)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread_lock = threading.Lock()
        self.fd: int | None = None
        self.pid = 0

    def _fd(self) -> int:
        if self.fd is None or self.pid != os.getpid():  # a forked child needs its own description
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self.pid = os.getpid()
        return self.fd

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self.thread_lock:
            fd = self._fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


_writer_locks: dict[str, _WriterLock] = {}


@contextlib.contextmanager
def writer_lock(engine: Engine) -> Iterator[None]:
    """Serialise writers of one SQLite file across processes; a no-op elsewhere."""
    database = engine.url.database if is_sqlite(engine) else None
    if not database or database == ":memory:":
        yield
        return
    lock = _writer_locks.get(database)
    if lock is None:
        lock = _writer_locks.setdefault(database, _WriterLock(database + ".writelock"))
    with lock.hold():
        yield
