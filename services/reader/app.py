"""The reader service: the read half of the SCIM API (gunicorn entry: ``services.reader.wsgi``)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from libs.config import Settings, load_settings
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url
from libs.web import auth, errors, instrument
from libs.web.request import register_app_routes
from services.reader import routes


def create_app(overrides: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(**dict(overrides or {}))
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_port=1)  # type: ignore[method-assign]
    app.extensions["scim.settings"] = settings
    # The engine's pool connects on first use, in the gunicorn worker that serves it.
    app.extensions["scim.store"] = DirectoryStore(create_engine_from_url(settings.database))
    errors.init_app(app)
    auth.init_app(app, settings.tokens)
    instrument.init_app(app, "reader")
    register_app_routes(app, routes.bp, "app_reads")
    return app
