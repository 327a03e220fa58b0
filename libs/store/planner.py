"""Keep PostgreSQL's planner statistics up with a directory that grows fast.

An initial sync from Entra inserts thousands of users a minute into tables PostgreSQL has
not analyzed yet; autovacuum reaches them only after its naptime (a minute) and its
thresholds. Until then the planner believes the tables are tiny, and it answered a
``userName eq`` lookup (Entra's query before every create) by reading every user through
another index: 5 ms instead of 0.05 ms at 10,000 users, growing with the directory. So the
worker runs ``ANALYZE`` itself each time the resources it created since the last one reach
a quarter of what the statistics know (at least 500): a few dozen runs while a directory
grows to millions, none once it is steady, when autovacuum's own thresholds take over.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("scimbus.store")

_TABLES = "resources, resource_values, group_members"


class GrowthAnalyzer:
    """``background``: analyze in a thread of its own, so the batch that crossed the mark
    answers without waiting for it (an ANALYZE of a large table takes a few hundred ms)."""

    def __init__(self, engine: Engine, *, fraction: float = 0.25, minimum: int = 500,
                 background: bool = True) -> None:
        self.engine = engine
        self.fraction = fraction
        self.minimum = minimum
        self.background = background
        self.pending = 0
        self.known: float | None = None  # rows of ``resources`` the statistics know (None: not read yet)
        self._running = threading.Lock()

    def created(self, count: int) -> None:
        """Called after a commit that created ``count`` resources."""
        if count <= 0 or self.engine.dialect.name != "postgresql":
            return
        self.pending += count
        if self.pending < max(self.minimum, (self.known or 0) * self.fraction):
            return
        if not self._running.acquire(blocking=False):
            return  # one is running; the next batch checks again
        if self.background:
            threading.Thread(target=self._analyze, name="analyze", daemon=True).start()
        else:
            self._analyze()

    def _analyze(self) -> None:
        counted = self.pending  # creates keep arriving while this runs: they count for the next
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                if self.known is None:  # a fresh process: ask before analyzing a big, analyzed table
                    self.known = self._reltuples(conn)
                    if self.pending < max(self.minimum, self.known * self.fraction):
                        return
                # SKIP_LOCKED: another worker analyzing right now has it covered.
                conn.exec_driver_sql(f"ANALYZE (SKIP_LOCKED) {_TABLES}")
                self.known = self._reltuples(conn)
            self.pending -= counted
        except DBAPIError as exc:  # statistics can wait; the writes are committed
            log.warning("could not analyze the directory tables: %s", exc)
        finally:
            self._running.release()

    @staticmethod
    def _reltuples(conn) -> float:
        return max(0.0, float(conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE oid = 'resources'::regclass").scalar() or 0))
