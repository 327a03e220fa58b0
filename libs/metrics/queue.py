"""Queue depth and live workers, read from Redis at scrape time (gauges that are never stale)."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from redis import Redis
from redis.exceptions import RedisError

from libs.health import live_workers


class QueueDepthCollector:
    def __init__(self, redis: Redis, queue_names: list[str]) -> None:
        self.redis = redis
        self.queue_names = queue_names

    def describe(self):
        # Registering on a registry that auto-describes (the default one) would otherwise call
        # collect(), i.e. Redis, while the app is being built; with a hung Redis that blocks.
        return self._families()

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("scim_queue_depth", "Jobs waiting in each write queue.", labels=["queue"]),
                # Per queue: the deliverers' workers take no write, and scale to zero apart.
                GaugeMetricFamily("scim_workers_alive", "RQ workers of each queue with a live heartbeat.",
                                  labels=["queue"]))

    def collect(self):
        depth, workers = self._families()
        try:
            for name in self.queue_names:
                depth.add_metric([name], self.redis.llen(f"rq:queue:{name}"))
                workers.add_metric([name], live_workers(self.redis, name))
        except RedisError:
            return
        yield depth
        yield workers
