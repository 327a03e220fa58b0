"""Which database a read runs on: the reader's replicas and the app's last commit position.

The position comes from Redis (``libs.bus.commits``), read once per request and only when
the request reads the directory. Redis unreachable: the position is unknown and the read
goes to the primary, which is never stale.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from libs.bus import commits
from libs.bus.connection import connect
from libs.config import Settings
from libs.store.access import open_reader_store
from libs.store.directory import DirectoryStore
from libs.store.replicas import ReplicaSet, RoutedStore

log = logging.getLogger("scimbus.reader")


class Replicas(ReplicaSet):
    def __init__(self, settings: Settings, primary: DirectoryStore) -> None:
        stores = [open_reader_store(settings, url) for url in settings.read_database_urls]
        super().__init__(primary, stores, wait=settings.replica_wait_ms / 1000, skip=settings.replica_skip_seconds)
        # Short timeouts: a hung Redis must cost a read a fraction of a second, then the primary.
        self.redis = connect(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def position(self, app: str) -> int | None:
        try:
            return commits.latest(self.redis, app)
        except RedisError as exc:
            log.warning("last commit position of app %s unknown (%s): reading the primary", app, type(exc).__name__)
            return None


def replica_set(settings: Settings, primary: DirectoryStore) -> Replicas:
    return Replicas(settings, primary)


def routed_store(replicas: Replicas, app: str) -> RoutedStore:
    return replicas.store_for(lambda: replicas.position(app))
