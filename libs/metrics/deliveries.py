"""Downstream delivery metrics: outcomes counted by the delivery jobs, lag and dead letters
read from the ledger at scrape time (gauges that are never stale)."""

from __future__ import annotations

import logging

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("scimbus.metrics")

DELIVERIES = Counter(
    "scim_deliveries_total", "Deliveries to downstream connectors, by outcome "
    "(delivered, removed, skipped, retry, dead).", ["connector", "outcome"],
)


def observe_delivery(connector: str, outcome: str) -> None:
    DELIVERIES.labels(connector, outcome).inc()


class DeliveryCollector:
    """scim_delivery_lag_seconds and scim_dead_letters per connector."""

    def __init__(self, status) -> None:
        self.status = status  # () → {connector: (lag seconds, dead letters)}

    def collect(self):
        lag = GaugeMetricFamily("scim_delivery_lag_seconds",
                                "Age of the oldest change not yet delivered to each connector.", labels=["connector"])
        dead = GaugeMetricFamily("scim_dead_letters", "Changes dead-lettered and not retried, per connector.",
                                 labels=["connector"])
        try:
            figures = self.status()
        except Exception as exc:  # a scrape must not fail because the database is down
            log.warning("delivery metrics unavailable: %s", exc)
            return
        for name, (seconds, count) in figures.items():
            lag.add_metric([name], seconds)
            dead.add_metric([name], count)
        yield lag
        yield dead
