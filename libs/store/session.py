"""Engines from a database URL: SQLite tuned for several processes, PostgreSQL pooled.

SQLite runs in WAL mode with a busy timeout and foreign keys on, so the reader and several
worker processes share one file safely; writers take the lock up front (``BEGIN
IMMEDIATE``) so two writers never deadlock upgrading a read lock.

Writers on SQLite also queue on an OS file lock (``writer_lock``) before BEGIN: SQLite's
own busy handler polls with sleeps of up to 100 ms, which turned two contending workers
into ~80 writes/s; ``flock`` wakes the next writer the moment the lock is released.

The reader's engine bounds each statement (issue 16): PostgreSQL's ``statement_timeout``,
set on each connection, and on SQLite a progress handler that aborts a statement past its
deadline (SQLite has no timeout of its own). Either way the statement fails with
``StatementTimeout``, which ``read_reconnecting`` raises in place of the driver's error.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

SQLITE_BUSY_TIMEOUT_MS = 30_000
_PROGRESS_STEPS = 10_000
"""SQLite virtual-machine steps between two looks at the clock (a few hundred microseconds)."""
_QUERY_CANCELED = "57014"
"""PostgreSQL's SQLSTATE of a statement stopped by statement_timeout."""

_T = TypeVar("_T")


class StatementTimeout(Exception):
    """A statement of the reader ran past its ``statement_timeout`` and was stopped."""


def create_engine_from_url(url: str, *, pool_size: int = 5, read_only: bool = False, ping: bool = True,
                           statement_timeout: float | None = None) -> Engine:
    """An engine for ``url``; ``read_only`` (the reader) runs PostgreSQL statements in
    autocommit: a SCIM read needs no multi-statement snapshot, and it saves the BEGIN and
    ROLLBACK round trips of every request.

    Pools ping a connection on checkout (``ping``), so work never starts on a connection
    that died with a database restart. The reader's does not (that ``SELECT 1`` was a
    round trip on every read): its reads retry once when a connection is found dead
    (``read_reconnecting``). Nor do the write workers' (a round trip per batch): a batch
    on a dead connection fails as a whole, and RQ runs it again a second later on a new one,
    its idempotency records making the second run exact.

    ``statement_timeout`` (seconds) stops any one statement that runs longer.

    ``hide_parameters``: an error's text names its statement but not the values bound to it,
    which are documents, password hashes and token digests; that text reaches logs, RQ's
    failed-job records and answers' causes (issue 16)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                     "check_same_thread": False,
                                                     "isolation_level": None}, hide_parameters=True)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        if statement_timeout:
            _sqlite_deadlines(engine, statement_timeout)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    options = {"isolation_level": "AUTOCOMMIT"} if read_only else {}
    engine = create_engine(parsed, pool_size=pool_size, max_overflow=pool_size * 2,
                           pool_pre_ping=ping and not read_only, pool_recycle=1800, hide_parameters=True, **options)
    if statement_timeout:
        _postgresql_statement_timeout(engine, statement_timeout)
    return engine


def _postgresql_statement_timeout(engine: Engine, seconds: float) -> None:
    milliseconds = max(1, int(seconds * 1000))

    @event.listens_for(engine, "connect")
    def _set(dbapi_conn: Any, _record: Any) -> None:
        # A session setting: it holds for every statement of the connection, in autocommit or not.
        with dbapi_conn.cursor() as cur:
            cur.execute(f"SET statement_timeout = {milliseconds}")
        if not dbapi_conn.autocommit:
            dbapi_conn.commit()


def _sqlite_deadlines(engine: Engine, seconds: float) -> None:
    @event.listens_for(engine, "connect")
    def _install(dbapi_conn: Any, record: Any) -> None:
        deadline = record.info["scim.deadline"] = [math.inf, False]

        def past_deadline() -> bool:
            if time.monotonic() > deadline[0]:
                deadline[1] = True  # read_reconnecting tells this abort from any other error
                return True
            return False

        dbapi_conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)

    @event.listens_for(engine, "before_cursor_execute")
    def _arm(conn: Connection, *_args: Any) -> None:
        # The deadline also covers fetching the rows: SQLite computes them as they are read.
        deadline = conn.connection.info.get("scim.deadline")
        if deadline is not None:
            deadline[0], deadline[1] = time.monotonic() + seconds, False


def _timed_out(exc: DBAPIError, conn: Connection) -> bool:
    if getattr(exc.orig, "sqlstate", None) == _QUERY_CANCELED:
        return True
    deadline = conn.connection.info.get("scim.deadline") if not conn.invalidated else None
    return bool(deadline and deadline[1])


def read_reconnecting(engine: Engine, read: Callable[[Connection], _T]) -> _T:
    """Run ``read`` on a pooled connection, once more on a fresh one when that connection
    turned out dead: every read on the reader's engine, whose pool does not ping.

    After a database restart the first statement on each stale connection fails instead;
    SQLAlchemy reports it as ``connection_invalidated`` and marks every connection pooled
    before it for replacement, so the retry gets a new one. ``read`` must only read (in
    autocommit or a transaction of its own): running it twice changes nothing. Still down:
    the error reaches the caller (503)."""
    try:
        return _read_once(engine, read)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return _read_once(engine, read)


def _read_once(engine: Engine, read: Callable[[Connection], _T]) -> _T:
    with engine.connect() as conn:
        try:
            return read(conn)
        except DBAPIError as exc:
            if _timed_out(exc, conn):
                raise StatementTimeout(str(exc.orig)) from None
            raise


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
