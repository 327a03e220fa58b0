"""The front service: the write half of the SCIM API (gunicorn entry: ``services.front.wsgi``)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

from libs.bus.queues import Bus
from libs.config import Settings, load_settings
from libs.metrics.queue import QueueDepthCollector
from libs.web import auth, errors, instrument
from libs.web.request import register_app_routes
from services.front import routes


def create_app(overrides: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(**dict(overrides or {}))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    app.extensions["scim.settings"] = settings
    # redis-py connects lazily: nothing is opened until the first request needs the bus.
    redis = Redis.from_url(settings.redis_url, socket_timeout=settings.write_timeout + 5,
                           socket_connect_timeout=5, health_check_interval=30)
    app.extensions["scim.bus"] = Bus(redis, settings.queue_name, job_timeout=settings.job_timeout)
    errors.init_app(app)
    auth.init_app(app, settings.tokens)
    instrument.init_app(app, "front", (QueueDepthCollector(redis, [settings.queue_name]),))
    register_app_routes(app, routes.bp, "app_writes")
    return app
