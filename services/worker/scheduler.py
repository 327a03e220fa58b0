"""RQ's scheduler as a thread of a pool's parent, not as a process of its own.

A job that failed (its worker was killed, the database blinked) is retried after an
interval: RQ parks it in the queue's scheduled registry, and a scheduler moves it back to
the queue when it is due. RQ's workers fork that scheduler from one of them: a third
Python process per pool, ~20 MB of PSS for a loop that wakes once a second. The pool's
parent idles between its one-second checks on its workers, so the loop runs there.

One scheduler per queue runs at a time, across every pool of every host: the one holding
RQ's lock (renewed each second, lapsing 61 s after its holder died). A pool without the
lock tries to take it every ``MAINTENANCE_INTERVAL`` seconds, as an RQ worker does for its
forked scheduler; a pool that stops releases it, so another pool takes over at once.
"""

from __future__ import annotations

import logging
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from rq.scheduler import RQScheduler

from libs.bus import defaults

log = logging.getLogger("scimbus.scheduler")


class PoolScheduler:
    def __init__(self, queue: str, connection: Redis, serializer, interval: int = 1) -> None:
        self.queue = queue
        self.rq = RQScheduler([queue], connection=connection, serializer=serializer, interval=interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rq-scheduler", daemon=True)
        self._tried_at = float("-inf")

    def start(self) -> PoolScheduler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        try:
            self.rq.release_locks()
            self.rq.register_death()
        except RedisError as exc:
            log.warning("scheduler: could not release its lock (it lapses within a minute): %s", exc)

    @property
    def holds_lock(self) -> bool:
        return self.queue in self.rq.acquired_locks

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except RedisError as exc:  # Redis restarting: the next tick tries again
                log.warning("scheduler: %s", exc)
            except Exception:  # never let the thread die: retries would stop for good
                log.exception("scheduler: unexpected failure; going on")
            self._stop.wait(self.rq.interval)

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
