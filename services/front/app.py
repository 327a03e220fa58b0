"""The front service: the write half of the SCIM API (gunicorn entry: ``services.front.wsgi``)."""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from libs.bus.connection import connect, is_sentinel
from libs.bus.queues import Bus
from libs.config import Settings, load_settings
from libs.health import redis_problem, workers_problem
from libs.metrics.queue import QueueDepthCollector
from libs.scim import passwords
from libs.web.app import build_app
from services.front import oauth, routes


def create_app(overrides: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(**dict(overrides or {}))
    passwords.limit_concurrency(settings.password_hashes)  # issue 16: argon2 costs 64 MiB a hash

    def attach(app: Flask) -> tuple:
        # redis-py connects lazily: nothing is opened until the first request needs the bus.
        redis = connect(settings.redis_url, socket_timeout=settings.write_timeout + 5,
                               socket_connect_timeout=5, health_check_interval=30)
        app.extensions["scim.bus"] = Bus(redis, settings.queue_name, job_timeout=settings.job_timeout,
                                          linger=settings.write_linger_ms / 1000,
                                          in_flight=settings.write_batches_in_flight,
                                          resends=is_sentinel(settings.redis_url))
        app.register_blueprint(oauth.bp)  # issue 5: /oauth/token, /oauth/jwks
        return (QueueDepthCollector(redis, [settings.queue_name]),)

    def readiness(app: Flask) -> tuple:
        # Its own client with short timeouts: the bus's waits up to write_timeout, and a probe
        # stuck that long on a hung Redis would hold a request thread past the probe's timeout.
        probe = connect(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
        if settings.workers_scale_to_zero:
            # No live worker is the idle state: the first write queued wakes one (KEDA), and the
            # write waits for it; the bus is what the front cannot work without.
            return (lambda: redis_problem(probe),)
        return (lambda: workers_problem(probe, settings.queue_name),)

    return build_app(__name__, settings, service="front", blueprint=routes.bp, attach=attach, readiness=readiness)
