"""The worker pool's one HTTP port: ``/metrics`` for Prometheus, ``/healthz`` and ``/readyz``
for probes.

prometheus-client's own ``start_http_server`` answers metrics on every path; probes need
their own answers, so this is its WSGI app behind a three-way dispatch, served from a
daemon thread of the pool's parent process. Readiness: Redis (the jobs) and the database
(where they are applied) both answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from libs.bus.connection import connect
from libs.config import Settings
from libs.health import redis_problem
from libs.metrics.metrics import registry_for_scrape

Check = Callable[[], "str | None"]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # probes every few seconds would flood the log
        pass


def probe_app(registry: CollectorRegistry, readiness: Sequence[Check]) -> Callable:
    metrics = make_wsgi_app(registry)

    def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            problems = [p for p in (check() for check in readiness) if p]
            status = "503 Service Unavailable" if problems else "200 OK"
            start_response(status, [("Content-Type", "text/plain")])
            return [("\n".join(problems) if problems else "ready").encode() + b"\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]

    return app


def serve_probes(port: int, registry: CollectorRegistry, readiness: Sequence[Check],
                 addr: str = "0.0.0.0") -> WSGIServer:
    server = make_server(addr, port, probe_app(registry, readiness), server_class=_ThreadingServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="scimbus-probes", daemon=True).start()
    return server


def serve_pool_probes(settings: Settings, port: int, collectors: tuple = ()) -> None:
    """/metrics, /healthz and /readyz of a pool, from its parent process."""
    from libs.store.access import database_problem, open_store

    # The probes' own clients, with timeouts shorter than a probe's: a hung dependency
    # answers 503, never a probe that times out.
    probe_redis = connect(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    store = open_store(settings, pool_size=1)
    serve_probes(port, registry_for_scrape(collectors),
                 (lambda: redis_problem(probe_redis), lambda: database_problem(store)))
