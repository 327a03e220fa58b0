"""The reader service: the read half of the SCIM API (gunicorn entry: ``services.reader.wsgi``)."""

from __future__ import annotations

from typing import Any, Mapping

from flask import Flask

from libs.config import Settings, load_settings
from libs.security.cursor_key import cursor_secret
from libs.store.access import database_problem, open_reader_store
from libs.web.app import build_app
from services.reader import reads, routes
from services.reader.cursors import CursorCodec


def create_app(overrides: Mapping[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    settings = settings or load_settings(**dict(overrides or {}))

    def attach(app: Flask) -> tuple:
        # The engine's pool connects on first use, in the gunicorn worker that serves it.
        store = open_reader_store(settings)
        app.extensions["scim.store"] = store
        if settings.read_database_urls:  # issue 21: replicas, read-your-writes by WAL position
            app.extensions["scim.replicas"] = reads.replica_set(settings, store)
        app.extensions["scim.cursors"] = CursorCodec(settings, lambda: cursor_secret(settings, store))
        return ()

    def readiness(app: Flask) -> tuple:
        store = app.extensions["scim.store"]
        return (lambda: database_problem(store),)

    return build_app(__name__, settings, service="reader", blueprint=routes.bp, attach=attach, readiness=readiness)
