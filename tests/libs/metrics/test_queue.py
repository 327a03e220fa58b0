"""The front's Redis gauges: queue depth and live workers, per queue."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rq import Queue, SimpleWorker

from libs.metrics.queue import QueueDepthCollector

pytestmark = pytest.mark.redis


def _scrape(redis_conn) -> str:
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(redis_conn, ["scim-writes"]))
    return generate_latest(registry).decode()


def test_a_deliverer_does_not_count_as_a_live_write_worker_and_a_dead_worker_not_at_all(redis_conn):
    deliverer = SimpleWorker(["scim-deliveries"], connection=redis_conn)
    deliverer.register_birth()
    Queue("scim-writes", connection=redis_conn).enqueue("builtins.print")
    try:
        text = _scrape(redis_conn)
        assert 'scim_queue_depth{queue="scim-writes"} 1.0' in text
        assert 'scim_workers_alive{queue="scim-writes"} 0.0' in text  # writes wait: none takes them
        writer = SimpleWorker(["scim-writes"], connection=redis_conn)
        writer.register_birth()
        assert 'scim_workers_alive{queue="scim-writes"} 1.0' in _scrape(redis_conn)
        redis_conn.delete(writer.key)  # killed: its heartbeat key expired, its name still listed
        assert 'scim_workers_alive{queue="scim-writes"} 0.0' in _scrape(redis_conn)
    finally:
        deliverer.register_death()
