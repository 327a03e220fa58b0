"""RQ's scheduler, run by a pool's parent between its checks on its workers.

A job that failed (its worker was killed, the database blinked) is retried after an
interval: RQ parks it in the queue's scheduled registry, and a scheduler moves it back to
the queue when it is due. RQ's workers fork that scheduler from one of them: a third
Python process per pool, ~20 MB of PSS for a loop that wakes once a second. The pool's
parent already wakes once a second to check on its workers; ``tick`` is called there, in
its main thread, so no thread of the parent can hold a lock (its Redis connection's,
stderr's while it logs) at the moment a worker is forked.

One scheduler per queue runs at a time, across every pool of every host: the one holding
RQ's lock (renewed on each tick, lapsing 61 s after its holder died). A pool without the
lock tries to take it every ``MAINTENANCE_INTERVAL`` seconds, as an RQ worker does for its
forked scheduler; a pool that stops releases it, so another pool takes over at once.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from rq.scheduler import RQScheduler

from libs.bus import defaults
from libs.bus.connection import connect

log = logging.getLogger("scimbus.scheduler")

WRITTEN_FOR = {"rq": "3.0"}
"""The library minor versions whose internals this module drives (tests/services/runtime/test_library_contracts.py)."""

_TIMEOUT = 5
"""Seconds a Redis command of the scheduler may take."""


class PoolScheduler:
    def __init__(self, queue: str, redis_url: str, serializer) -> None:
        self.queue = queue
        # Timeouts: a hung Redis may slow the pool's loop, never stall it for good.
        redis = connect(redis_url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT)
        self.rq = RQScheduler([queue], connection=redis, serializer=serializer)
        self._tried_at = float("-inf")
        self._failing = False

    @property
    def holds_lock(self) -> bool:
        return self.queue in self.rq.acquired_locks

    def tick(self) -> None:
        """Renew the lock (or try to take it) and re-queue the retries now due; never raises."""
        try:
            self._tick()
        except RedisError as exc:  # Redis restarting: the next tick tries again
            if not self._failing:
                log.warning("scheduler of %s: %s (retrying every tick)", self.queue, exc)
            self._failing = True
            return
        except Exception:  # a bug must not stop the pool from respawning its workers
            log.exception("scheduler of %s: unexpected failure", self.queue)
            return
        if self._failing:
            log.info("scheduler of %s: Redis answers again", self.queue)
            self._failing = False

    def stop(self) -> None:
        try:
            self.rq.release_locks()
            self.rq.register_death()
        except RedisError as exc:
            log.warning("scheduler of %s: could not release its lock (it lapses within a minute): %s",
                        self.queue, exc)

    def _tick(self) -> None:
        if not self.holds_lock:
            if time.monotonic() - self._tried_at < defaults.MAINTENANCE_INTERVAL:
                return
            self._tried_at = time.monotonic()
            if not self.rq.acquire_locks():
                return
            self.rq.register_birth()
        self.rq.heartbeat()  # renews the lock; drops it from acquired_locks if another took it
        if self.holds_lock:
            self.rq.enqueue_scheduled_jobs()
