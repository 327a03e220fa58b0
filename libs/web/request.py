"""Reading SCIM requests: the path as meant, the JSON body, the app in the URL, the base URL
for locations, the request id."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import orjson
from flask import Blueprint, Flask, Request, Response, g, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.routing import BaseConverter
from werkzeug.sansio.utils import get_current_url

from libs.scim.errors import InvalidSyntax, NotFound, PayloadTooLarge, UnsupportedMediaType

JSON_TYPES = ("application/scim+json", "application/json")

_SLASHES = re.compile(r"//+")


def lenient_path(path: str) -> str:
    """``/scim/Users/`` → ``/scim/Users``, ``/scim//Users`` → ``/scim/Users``: what a client that
    joins URLs (a base ending in ``/`` plus ``/Users``, or a collection plus ``/``) means."""
    if "//" in path:
        path = _SLASHES.sub("/", path)
    return path.rstrip("/") or "/"


class LenientPaths:
    """WSGI middleware: routes see ``lenient_path(PATH_INFO)``, so a trailing slash after a
    collection, an id or ``.search``, and a doubled slash, change nothing. The gateway
    routes the same paths by method (its ``.search`` location allows the trailing slash).

    PATH_INFO is percent-decoded: where the server gives the path as sent (gunicorn's
    ``RAW_URI``), only slashes the client wrote count, so ``/Users/a%2F`` still names the id
    ``a/`` (none such: 404) rather than ``/Users/a``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.endswith("/") or "//" in path:
            raw = (environ.get("RAW_URI") or environ.get("REQUEST_URI") or path).partition("?")[0]
            if raw.endswith("/") or "//" in raw:
                environ["PATH_INFO"] = lenient_path(path)
        return self.app(environ, start_response)


def current_request() -> Request:
    """The request itself rather than Flask's proxy to it, for code that reads it several times:
    each read through the proxy looks the request up in its context again (~1.5 µs; a write
    request made ~35 such reads, its hooks and handler together)."""
    return request._get_current_object()  # type: ignore[attr-defined]


def json_body(max_bytes: int) -> Any:
    """The request's JSON body; SCIM errors for a wrong type, size or syntax."""
    req = current_request()
    length = req.content_length
    if length is not None and length > max_bytes:
        raise PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")
    mimetype = (req.mimetype or "").lower()
    if mimetype not in JSON_TYPES:
        raise UnsupportedMediaType(f"Content-Type {req.content_type or 'none'!r} is not application/scim+json.")
    raw = req.get_data(cache=False)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"The body is larger than {max_bytes} bytes.")
    if not raw.strip():
        raise InvalidSyntax("The request body is empty.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidSyntax(f"The body is not valid JSON: {exc.args[0][:200] if exc.args else exc}") from exc


def drain_unread_body(max_bytes: int) -> Callable[[Response], Response]:
    """An ``after_request`` hook that reads what is left of the request body before answering.

    An answer given before the body was read (401, 413 by Content-Length, 415, a 404 app)
    would otherwise reach the client as a 503: gunicorn discards at most 64 KB of an unread
    body and then closes the connection, the kernel resets it for the bytes still unread, and
    nginx, still sending that body, answers 502 instead of our response (seen under load:
    a quarter of 3 MB unauthenticated POSTs). The gateway caps bodies at ``max_bytes`` and
    sends them at local speed; a larger one (a client that bypasses the gateway) is left to
    gunicorn."""

    def drain(response: Response) -> Response:
        req = current_request()
        length = req.content_length
        if length and length <= max_bytes:
            with contextlib.suppress(ClientDisconnected, OSError):  # gone: nothing left to answer
                req.stream.exhaust()
        return response

    return drain


_GATEWAY_REQUEST_ID = re.compile(r"[0-9A-Fa-f-]{16,64}")
"""What a gateway's own id looks like: nginx's $request_id (32 hex digits), Envoy's (a UUID)."""


def request_id() -> str:
    """Our id of this request: the one the gateway stamped (it overwrites the client's), else
    one made here. A value no gateway makes (a client that reached this process directly)
    is not taken for ours."""
    ctx = g._get_current_object()  # type: ignore[attr-defined]  # read, maybe written: one lookup
    ours = ctx.get("scim_request_id")
    if ours is None:
        given = request.headers.get("X-Request-Id", "")
        ours = ctx.scim_request_id = given if _GATEWAY_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    return ours


def client_request_id(req: Request | None = None) -> str | None:
    """The id the client sent (the gateway passes it as X-Client-Request-Id), kept beside ours."""
    given = (req or request).headers.get("X-Client-Request-Id")
    return given[:128] if given else None


def resolve_app(app: str | None, default_app: str, apps: frozenset[str]) -> str:
    if app is None:
        return default_app
    if app not in apps:
        raise NotFound(f"No SCIM app {app[:100]!r} is configured here.")
    return app


def base_url(app: str | None) -> str:
    """``https://host:8585/scim`` (or ``…/scim/<app>``) as the client sees it, behind the gateway."""
    req = current_request()
    return _base_url(req.scheme, req.host, app)


@lru_cache(maxsize=256)
def _base_url(scheme: str, host: str, app: str | None) -> str:
    # What ``request.host_url`` builds (IDNA and IRI decoding), once per host instead of on
    # every write: a front sees one or two hosts.
    root = get_current_url(scheme, host).rstrip("/")
    return f"{root}/scim" + (f"/{app}" if app else "")


class AppConverter(BaseConverter):
    """An app name in ``/scim/<app>/…``: never one of the SCIM endpoint names, so
    ``/scim/Users/<id>`` and ``/scim/<app>/Users`` cannot be confused."""

    regex = r"(?!(?i:users|groups|schemas|resourcetypes|serviceproviderconfig|bulk|me|\.search)(?:/|$))[A-Za-z0-9_\-]{1,64}"


def register_app_routes(app: Flask, bp: Blueprint, name: str) -> None:
    app.url_map.converters["scimapp"] = AppConverter
    app.register_blueprint(bp, url_prefix="/scim")
    app.register_blueprint(bp, url_prefix="/scim/<scimapp:app>", name=name)
