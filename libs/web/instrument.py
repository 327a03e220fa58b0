"""Request metrics and the /metrics, /healthz, /readyz endpoints shared by the front and the reader.

``/healthz`` is liveness (the process answers); ``/readyz`` is readiness: each service
passes the checks of what it needs (reader: the database; front: Redis and at least one
live worker), and a probe gets 503 with the reasons while one fails.

``/metrics`` is served by each service on its own port; the public gateway only forwards
``/scim``, so metrics never leave the host through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from flask import Flask, Request, Response, g

from libs.metrics.metrics import observe_request, registry_for_scrape, render
from libs.scim.schemas import BY_ENDPOINT
from libs.web.request import current_request

# What a request's URL names, by its lower-cased endpoint segment: a fixed set of labels.
_RESOURCE_TYPES = {**{endpoint: r.name for endpoint, r in BY_ENDPOINT.items()},
                   "schemas": "Schema", "resourcetypes": "ResourceType",
                   "serviceproviderconfig": "ServiceProviderConfig", "bulk": "Bulk", "me": "Me"}


def _endpoint_label(req: Request) -> str:
    # The route pattern, never the concrete URL: ids in labels would explode cardinality.
    rule = req.url_rule.rule if req.url_rule is not None else "unmatched"
    return rule.replace("/scim/<scimapp:app>", "/scim")


def _resource_type_label(req: Request) -> str:
    """User or Group (or a discovery endpoint, Bulk, "all" for the root /.search): the
    endpoint segment looked up in a fixed table, so no URL adds a label value."""
    endpoint = (req.view_args or {}).get("endpoint")
    if isinstance(endpoint, str):
        return _RESOURCE_TYPES.get(endpoint.lower(), "unknown")
    if req.url_rule is not None and req.url_rule.rule.endswith("/.search"):
        return "all"
    return ""


ReadinessCheck = Callable[[], "str | None"]

_UNOBSERVED = ("/metrics", "/healthz", "/readyz")


def init_app(app: Flask, service: str, extra_collectors: tuple = (),
             readiness: Sequence[ReadinessCheck] = ()) -> None:
    registry = registry_for_scrape(extra_collectors)

    @app.before_request
    def _start_timer() -> None:
        g.scim_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.get("scim_started")
        req = current_request()
        if started is not None and not req.path.startswith(_UNOBSERVED):
            observe_request(service, req.method, _endpoint_label(req), _resource_type_label(req),
                            response.status_code, time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        payload, content_type = render(registry)
        return Response(payload, content_type=content_type)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", content_type="text/plain")

    @app.get("/readyz")
    def readyz() -> Response:
        problems = [p for p in (check() for check in readiness) if p]
        if problems:
            return Response("\n".join(problems) + "\n", status=503, content_type="text/plain")
        return Response("ready\n", content_type="text/plain")
