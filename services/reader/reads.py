"""Which database a read runs on: the reader's replicas and the app's last commit position.

The position comes from Redis (``libs.bus.commits``), read once per request and only when
the request reads the directory. Redis unreachable: the position is unknown and the read
goes to the primary, which is never stale.

Workers record positions only while a reader announces that it reads replicas, so each
reader process announces it (``Fence``, a thread started by its first read, which refreshes
the announcement) and replicas serve only reads that see the announcement fenced: read
the primary for ``commits.FENCE``, then record the primary's WAL position for every app.
Why that is enough is in ``libs.bus.commits``. The announcement and the fenced token come
with the position, in the same command: a read that sees them differ, or no announcement,
reads the primary and wakes the thread, which announces again and fences.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid

from redis import Redis
from redis.exceptions import RedisError

from libs.bus import commits
from libs.bus.connection import connect
from libs.config import Settings
from libs.store.access import commit_position, open_reader_store
from libs.store.directory import DirectoryStore
from libs.store.errors import DatabaseError
from libs.store.replicas import ReplicaSet, RoutedStore

log = logging.getLogger("scimbus.reader")

_RETRY = 1.0
"""Seconds before a fence or an announcement that failed is tried again."""


class Fence:
    """This process's announcement that it reads replicas, and the fence of a new one."""

    def __init__(self, redis: Redis, primary: DirectoryStore, apps: list[str], *, wait: float = commits.FENCE,
                 refresh: float = commits.REFRESH) -> None:
        self.redis = redis
        self.primary = primary
        self.apps = apps
        self.wait = wait
        self.refresh = refresh
        self._seen: str | None = None
        self._due = 0.0
        self._failing = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def passed(self, token: str | None, fenced: str | None) -> bool:
        """Whether replicas may serve a read that saw the announcement ``token`` and the fenced one."""
        self.start()
        if token is not None and token == fenced:
            return True
        if token is None or token != self._seen:  # gone or replaced: announce and fence now
            self._wake.set()
        return False

    def start(self) -> None:
        # In the gunicorn worker, not where the app was built: the master (preload_app)
        # forks its workers, and its threads stay behind.
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="scimbus-replica-fence", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                delay = self.step()
            except Exception:  # the thread must outlive a bug: reads would stay on the primary
                log.exception("replica fence failed")
                delay = _RETRY
            self._wake.wait(delay)

    def step(self) -> float:
        """Announce (or refresh), fence when due; the seconds until the next step."""
        try:
            token, fenced = commits.announce(self.redis, uuid.uuid4().hex)
        except RedisError as exc:
            # Once per outage: it is retried every second while Redis is away.
            log.log(logging.DEBUG if self._failing else logging.WARNING,
                    "announcing the replica reader failed (%s): reads stay on the primary until Redis "
                    "answers", type(exc).__name__)
            self._failing = True
            return _RETRY
        if self._failing:
            self._failing = False
            log.info("replica reader announced again: Redis answers")
        if token == fenced:
            return self.refresh
        now = time.monotonic()  # after the answer: the announcement is at least this old
        if token != self._seen:
            self._seen, self._due = token, now + self.wait
            log.info("replica reader announced: reads go to the primary for %.1f s, then to replicas", self.wait)
        if now < self._due:
            return min(self._due - now, self.refresh)
        try:
            position = commit_position(self.primary)
            if position is not None:
                commits.record(self.redis, {app: position for app in self.apps})
            commits.fenced(self.redis, token)
        except (RedisError, DatabaseError) as exc:
            log.warning("replica fence failed (%s): reads stay on the primary", type(exc).__name__)
            return _RETRY
        return self.refresh


class Replicas(ReplicaSet):
    def __init__(self, settings: Settings, primary: DirectoryStore, *, fence: float = commits.FENCE,
                 refresh: float = commits.REFRESH) -> None:
        stores = [open_reader_store(settings, url) for url in settings.read_database_urls]
        super().__init__(primary, stores, wait=settings.replica_wait_ms / 1000, skip=settings.replica_skip_seconds)
        # Short timeouts: a hung Redis must cost a read a fraction of a second, then the primary.
        self.redis = connect(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.fence = Fence(self.redis, primary, sorted(settings.app_names), wait=fence, refresh=refresh)

    def position(self, app: str) -> int | None:
        """The app's last commit position; None (read the primary) while the announcement
        the read sees is not fenced, or when Redis cannot tell."""
        try:
            token, fenced, position = commits.latest_announced(self.redis, app)
        except RedisError as exc:
            log.warning("last commit position of app %s unknown (%s): reading the primary", app, type(exc).__name__)
            return None
        return position if self.fence.passed(token, fenced) else None


def replica_set(settings: Settings, primary: DirectoryStore) -> Replicas:
    return Replicas(settings, primary)


def routed_store(replicas: Replicas, app: str) -> RoutedStore:
    return replicas.store_for(lambda: replicas.position(app))
