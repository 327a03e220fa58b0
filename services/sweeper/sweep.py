"""``scimbus sweeper``: re-enqueue the deliveries that are due and those never enqueued.

A delivery that failed retryably waits in the delivery ledger for its backoff; a change
committed just before its writer died was never enqueued at all. ``sweep`` finds both in
the ledger and puts them on the delivery queue (``services.deliverer.fanout.enqueue``);
``run_sweeper`` does it every few seconds, one sweeper active at a time across all hosts,
and runs the retention (``retain``) every ``SCIM_RETENTION_INTERVAL``.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import LockError

from libs.store import deliveries as ledger
from services.deliverer.fanout import DeliveryContext, enqueue, get_context

log = logging.getLogger("scimbus.deliveries")

SWEEP_GRACE = 2.0
"""Seconds a fresh change is left to its own after-commit job before the sweeper enqueues it."""


def sweep(ctx: DeliveryContext, *, grace: float = SWEEP_GRACE) -> int:
    """Enqueue every due, unhandled change; move the cursors. Returns the jobs enqueued."""
    enqueued = 0
    now = ledger.utcnow()
    cutoff = ledger.grace_cutoff(grace)
    queue = ctx.queue
    book = ctx.ledger
    for name, connector in ctx.connectors.items():
        app, types = connector.options["app"], tuple(connector.mappings)
        for item in book.pending(name, app, types):
            if item.since > cutoff or not ledger.due(item.next_attempt_at, now):
                continue
            stamp = int(item.next_attempt_at.timestamp()) if item.next_attempt_at else 0
            enqueue(queue, name, item.key, f"dlv-{name}-sweep-{item.key.resource_type}-{item.key.resource_id}"
                                           f"-{item.seq}-{stamp}", timeout=ctx.settings.delivery_timeout)
            enqueued += 1
        book.advance_cursor(name, app, types)
    return enqueued


RETENTION_BUDGET = 5.0
"""Seconds of purging per round at most; a backlog (a first run on a grown database) goes
over the next rounds, and the sweeper's own work is never held up for long."""


def retain(ctx: DeliveryContext) -> None:
    """One retention round: purge, in batches, what no re-run, delivery or audit needs."""
    from libs.store import retention

    report = retention.purge(ctx.store, retention.Windows.from_settings(ctx.settings), list(ctx.connectors),
                             budget=RETENTION_BUDGET)
    if report.total:  # DEBUG: routine, every minute under load; the figures are in `scimbus maintain`
        log.debug("retention purged %s%s", report.purged, "" if report.complete else " (more next round)")


def run_sweeper(interval: float) -> None:
    """``scimbus sweeper``: sweep forever, and purge past the retention every
    ``SCIM_RETENTION_INTERVAL`` (libs/store/retention.py); a Redis lock keeps one sweeper
    active at a time."""
    ctx = get_context()
    retained_at = float("-inf")
    while True:
        started = time.monotonic()
        try:
            lock = ctx.redis.lock("scimbus:sweeper", timeout=max(30, interval * 10), blocking_timeout=0)
            if lock.acquire():
                try:
                    count = sweep(ctx)
                    if count:
                        log.info("sweeper enqueued %d deliveries", count)
                    if time.monotonic() - retained_at >= ctx.settings.retention_interval:
                        retained_at = time.monotonic()
                        retain(ctx)
                finally:
                    try:
                        lock.release()
                    except LockError:
                        pass
        except Exception as exc:  # the database or Redis is down: try again next round
            log.warning("sweep failed: %s", exc)
        time.sleep(max(0.05, interval - (time.monotonic() - started)))
