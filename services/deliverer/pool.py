"""``scimbus deliverer``: a pool of RQ workers on the delivery queue, apart from the writers.

Deliveries wait on targets (an LDAP server, a web hook) and may back off for minutes; on a
queue and in processes of their own they never hold a write worker, so the SCIM API
answers at its normal pace whatever a downstream application does. The pool's parent
serves ``/metrics`` (and the probes): delivery outcomes, plus lag and dead letters read from the ledger.
"""

from __future__ import annotations

import logging

from rq.serializers import JSONSerializer

from libs.bus.connection import connect
from libs.config import Settings
from libs.metrics.deliveries import DeliveryCollector
from libs.bus.rq_adapter import start_pool
from services.runtime.pool_probes import serve_pool_probes

log = logging.getLogger("scimbus.deliverer")


class _LazyStatus:
    """Opens its own store on the first scrape (never before the pool forks)."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.ctx = settings, None

    def __call__(self):
        from libs.connectors.registry import build_connectors
        from libs.store.access import open_store
        from services.deliverer.fanout import DeliveryContext, status

        if self.ctx is None:
            self.ctx = DeliveryContext(self.settings, open_store(self.settings, pool_size=1),
                                       connect(self.settings.redis_url), {})
            # Only names and apps are needed for the figures: connectors without clients.
            self.ctx.connectors = build_connectors(self.settings)
        return status(self.ctx)


def run_pool(settings: Settings, *, processes: int, metrics_port: int | None) -> None:
    import services.deliverer.fanout  # noqa: F401  (warm imports for every forked worker)

    if metrics_port:
        serve_pool_probes(settings, metrics_port, (DeliveryCollector(_LazyStatus(settings)),))
    start_pool(settings, settings.delivery_queue, JSONSerializer, processes)
