"""Prometheus metrics of every service, behind small named functions.

Names follow prometheus.io naming: the ``scim_`` prefix, ``_total`` counters, ``_seconds``
durations, and no ids, userNames or emails in labels (unbounded cardinality, and PII).
Under gunicorn or the worker pool, ``PROMETHEUS_MULTIPROC_DIR`` is set before the first
import, so each process writes its own files and ``/metrics`` merges them.
"""

from __future__ import annotations

import os
from functools import lru_cache

from prometheus_client import (
    CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# resource_type: User, Group, the discovery and Bulk endpoints, "all" (root /.search), "" (no
# SCIM endpoint), "unknown": a fixed set, whatever the URL (libs.web.instrument).
HTTP_REQUESTS = Counter(
    "scim_http_requests_total", "SCIM HTTP requests answered.",
    ["service", "method", "endpoint", "resource_type", "status"],
)
HTTP_LATENCY = Histogram(
    "scim_http_request_duration_seconds", "Time to answer a SCIM HTTP request.",
    ["service", "method", "endpoint", "resource_type"], buckets=LATENCY_BUCKETS,
)
JOBS = Counter("scim_jobs_total", "Write jobs applied by workers.", ["op", "resource_type", "outcome"])
JOB_DURATION = Histogram(
    "scim_job_duration_seconds", "Time a worker spent applying one write job.", ["op"], buckets=LATENCY_BUCKETS,
)
WRITE_BATCH_SIZE = Histogram(
    "scim_write_batch_size", "Writes applied per bus job (one transaction).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
BATCH_DURATION = Histogram(
    "scim_write_batch_duration_seconds", "Time a worker spent applying one batch of writes.",
    buckets=LATENCY_BUCKETS,
)
WRITES_EXPIRED = Counter(
    "scim_writes_expired_total", "Writes a worker did not apply: past their deadline, or given up by their front "
    "(answered 503), before a worker took them.",
)
JOB_FAILURES = Counter(
    "scim_job_failures_total", "Write jobs that raised in a worker (retried or failed).", ["exception"],
)
UNDECLARED_ATTRIBUTES = Counter(
    "scim_undeclared_attributes_total",
    "Attributes no schema declares, ignored in writes (SCIM_UNKNOWN_ATTRIBUTES=ignore), by name: declare the "
    "ones you need. At most 100 names per process; then (other).", ["attribute"],
)


def observe_request(service: str, method: str, endpoint: str, resource_type: str, status: int,
                    seconds: float) -> None:
    requests, latency = _request_children(service, method, endpoint, resource_type, status)
    requests.inc()
    latency.observe(seconds)


@lru_cache(maxsize=2048)
def _request_children(service: str, method: str, endpoint: str, resource_type: str, status: int) -> tuple:
    # ``labels()`` validates and looks its child up under a lock on every call; the label
    # sets are few (route patterns and resource types, never ids), so each pair is looked up once.
    return (HTTP_REQUESTS.labels(service, method, endpoint, resource_type, str(status)),
            HTTP_LATENCY.labels(service, method, endpoint, resource_type))


def count_undeclared(attribute: str) -> None:
    UNDECLARED_ATTRIBUTES.labels(attribute).inc()


def observe_job(op: str, resource_type: str, outcome: str, seconds: float) -> None:
    JOBS.labels(op, resource_type, outcome).inc()
    JOB_DURATION.labels(op).observe(seconds)


def observe_batch(size: int, seconds: float) -> None:
    WRITE_BATCH_SIZE.observe(size)
    BATCH_DURATION.observe(seconds)


def registry_for_scrape(extra_collectors: tuple = ()) -> CollectorRegistry:
    """The registry /metrics renders: merged multi-process files when configured."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    for collector in extra_collectors:
        try:
            registry.register(collector)
        except ValueError:  # already registered on the global registry
            pass
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
