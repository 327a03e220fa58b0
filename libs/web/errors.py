"""One place that turns every failure into a SCIM error response, never a traceback.

``ScimError`` renders itself; Werkzeug's HTTP errors (unknown route, wrong method, body
too large) are mapped to their SCIM classes; anything else is logged with its traceback
and answered as a bare 500 whose body says nothing about the code.
"""

from __future__ import annotations

import logging

from flask import Flask, Response
from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from libs.scim import errors
from libs.web.responses import scim_response

log = logging.getLogger("scimbus.http")

_HTTP_TO_SCIM: dict[type[HTTPException], type[errors.ScimError]] = {
    NotFound: errors.NotFound,
    MethodNotAllowed: errors.MethodNotAllowed,
    RequestEntityTooLarge: errors.PayloadTooLarge,
}


def render_error(error: errors.ScimError) -> Response:
    return scim_response(error.to_body(), error.status, error.headers)


def _http_error(exc: HTTPException) -> Response:
    cls = _HTTP_TO_SCIM.get(type(exc))
    if cls is not None:
        return render_error(cls())
    if exc.code and exc.code < 500:
        err = errors.InvalidSyntax() if exc.code == 400 else errors.ScimError(exc.description)
        if exc.code != 400:
            err.status = exc.code  # type: ignore[misc]
        return render_error(err)
    return render_error(errors.InternalError())


def _backend_unavailable(exc: Exception) -> Response:
    # The database or Redis is away (restart, failover): a retryable 503, never a 500.
    log.warning("backend unavailable: %s", type(exc).__name__)
    return render_error(errors.Unavailable("A backend of the service is temporarily unavailable; retry later."))


def _unexpected(exc: Exception) -> Response:
    log.exception("unexpected error while answering a request")
    return render_error(errors.InternalError())


def init_app(app: Flask) -> None:
    app.register_error_handler(errors.ScimError, render_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(OperationalError, _backend_unavailable)
    app.register_error_handler(InterfaceError, _backend_unavailable)
    app.register_error_handler(RedisError, _backend_unavailable)
    app.register_error_handler(Exception, _unexpected)
