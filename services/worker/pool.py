"""``scimbus worker``: a pool of RQ workers applying SCIM writes from the write queue.

The pool itself (respawns, the scheduler, the probes) is ``libs.bus.rq_adapter``,
shared with the deliverer; this module picks the write queue and warms the job code.
"""

from __future__ import annotations

from libs.bus.serializer import OrjsonSerializer
from libs.config import Settings
from libs.bus.rq_adapter import start_pool
from services.runtime.pool_probes import serve_pool_probes


def run_pool(settings: Settings, *, processes: int, metrics_port: int | None) -> None:
    # Import the job code once in the parent: every forked worker starts warm, instead of
    # its first job paying ~0.5 s of imports while Entra waits, and shares these pages.
    import services.worker.jobs  # noqa: F401

    if metrics_port:
        serve_pool_probes(settings, metrics_port)
    start_pool(settings, settings.queue_name, OrjsonSerializer, processes)
