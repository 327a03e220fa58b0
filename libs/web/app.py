"""What the front and the reader share when built: settings, proxy headers, errors, auth,
metrics and the ``/scim`` + ``/scim/<app>`` routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from libs.config import Settings
from libs.scim import extensions
from libs.security import limits
from libs.web import auth, errors, instrument, logs
from libs.web.request import LenientPaths, drain_unread_body, register_app_routes


class ScimFlask(Flask):
    """Flask, asking once per function whether it is a coroutine rather than on every call:
    Flask's ``ensure_sync`` inspects each hook and view each time it runs (seven per
    request here), and a function's answer never changes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sync: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        sync = self._sync.get(func)
        if sync is None:
            sync = self._sync[func] = super().ensure_sync(func)
        return sync


def build_app(import_name: str, settings: Settings, *, service: str, blueprint: Blueprint,
              attach: Callable[[Flask], tuple] = lambda app: (),
              readiness: Callable[[Flask], tuple] = lambda app: ()) -> Flask:
    """A SCIM service app; ``attach`` adds its clients and returns extra metric collectors,
    ``readiness`` returns the checks of its ``/readyz`` (see ``libs.health``)."""
    logs.configure(settings)
    app = ScimFlask(import_name)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # The gateway sets X-Forwarded-For and -Proto, and passes the client's Host: locations name
    # the host and scheme Entra used. X-Forwarded-Host and -Port are not the gateway's, so a
    # client's own would rename the server: they are not trusted.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    app.wsgi_app = LenientPaths(app.wsgi_app)  # type: ignore[method-assign]  # /Users/ is /Users (issue 15)
    app.extensions["scim.settings"] = settings
    extensions.install(settings.file)  # issue 3: extension schemas declared in the config file
    collectors = attach(app)
    errors.init_app(app)
    auth.init_app(app, settings)
    limits.init_app(app)  # NUL characters in URLs
    instrument.init_app(app, service, collectors, readiness(app))
    logs.init_app(app)
    register_app_routes(app, blueprint, f"{service}_app_scoped")
    app.after_request(drain_unread_body(settings.max_body_bytes))
    return app
