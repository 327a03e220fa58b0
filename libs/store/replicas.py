"""PostgreSQL read replicas for the reader, with read-your-writes.

The reader serves a request from a replica only when that replica has replayed the WAL
at least up to the app's last commit (``libs.bus.commits``, recorded by the worker before
the front answered the write). Otherwise it waits a little (``wait``: the replica is
usually milliseconds behind) and then reads the primary. A replica that refuses
connections, fails a read, or does not catch up within ``wait`` is skipped for ``skip``
seconds and tried again after; a read that fails on a replica runs again on the primary,
so losing a replica costs no request.

Each replica's replayed position is remembered between requests: it only grows, so a read
whose position it already covers (most reads: nothing was written since) costs no extra
round trip. Only when it does not is ``pg_last_wal_replay_lsn()`` asked again.

Written here rather than taken from a library: SQLAlchemy has no replica routing, and
routing by a client's own WAL position is specific to how the bus answers writes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from libs.store.directory import DirectoryStore

log = logging.getLogger("scimbus.store")

_CURRENT = text("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
_REPLAYED = text("SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn")
_POLL = 0.01
"""Seconds between two looks at a replica that is behind the position a read needs."""


def wal_position(engine: Engine) -> int | None:
    """The primary's WAL insert position (bytes since 0/0), at or past every transaction
    committed before the call; None on a database without WAL positions (SQLite)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return int(conn.execute(_CURRENT).scalar_one())


@dataclass
class Replica:
    engine: Engine
    store: DirectoryStore
    replayed: int = 0
    skip_until: float = 0.0

    @property
    def name(self) -> str:
        url = self.engine.url
        return f"{url.host}:{url.port or 5432}"


class ReplicaSet:
    """Picks the engine a read runs on: a replica that has replayed ``position``, else the primary."""

    def __init__(self, primary: DirectoryStore, replicas: list[DirectoryStore | Engine], *, wait: float,
                 skip: float) -> None:
        self.primary = primary
        stores = [r if isinstance(r, DirectoryStore) else DirectoryStore(r) for r in replicas]
        self.replicas = [Replica(store.engine, store) for store in stores]
        self.wait = wait
        self.skip = skip
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def _candidates(self) -> list[Replica]:
        now = time.monotonic()
        healthy = [r for r in self.replicas if r.skip_until <= now]
        if not healthy:
            return []
        start = next(self._turn) % len(healthy)  # spread reads over the replicas
        return healthy[start:] + healthy[:start]

    def skip_replica(self, replica: Replica, why: str) -> None:
        if replica.skip_until <= time.monotonic():
            log.warning("read replica %s skipped for %.0f s: %s", replica.name, self.skip, why)
        replica.skip_until = time.monotonic() + self.skip

    def choose(self, position: int | None) -> Replica | None:
        """A replica that has replayed ``position`` (None: unknown, read the primary)."""
        if position is None:
            return None
        candidates = self._candidates()
        for replica in candidates:
            if replica.replayed >= position:
                return replica
        deadline = time.monotonic() + self.wait
        while candidates:
            for replica in list(candidates):
                try:
                    with replica.engine.connect() as conn:
                        replica.replayed = max(replica.replayed, int(conn.execute(_REPLAYED).scalar_one() or 0))
                except DBAPIError as exc:
                    self.skip_replica(replica, f"unreachable ({type(exc.orig).__name__})")
                    candidates.remove(replica)
                    continue
                if replica.replayed >= position:
                    return replica
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        for replica in candidates:  # behind by more than the wait: let it catch up unbothered
            self.skip_replica(replica, f"more than {self.wait * 1000:.0f} ms behind the primary")
        return None

    def store_for(self, position_of: Callable[[], int | None]) -> RoutedStore:
        return RoutedStore(self, position_of)


class RoutedStore:
    """The reads of ``DirectoryStore`` on the replica ``ReplicaSet.choose`` picks for this
    request, on the primary when none fits or the replica fails the read."""

    def __init__(self, replicas: ReplicaSet, position_of: Callable[[], int | None]) -> None:
        self.replicas = replicas
        self.position_of = position_of

    @property
    def engine(self) -> Engine:
        return self.replicas.primary.engine

    def _read(self, method: str, *args: Any, **kwargs: Any) -> Any:
        replica = self.replicas.choose(self.position_of())
        if replica is not None:
            try:
                return getattr(replica.store, method)(*args, **kwargs)
            except DBAPIError as exc:  # stopped, restarting, or a recovery conflict: the primary answers
                self.replicas.skip_replica(replica, f"a read failed ({type(exc.orig).__name__})")
        return getattr(self.replicas.primary, method)(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._read("get", *args, **kwargs)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._read("search", *args, **kwargs)

    def search_after(self, *args: Any, **kwargs: Any) -> Any:
        return self._read("search_after", *args, **kwargs)
