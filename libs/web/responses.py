"""SCIM JSON responses: orjson-encoded, ``application/scim+json`` as Entra expects."""

from __future__ import annotations

from typing import Any, Mapping

import orjson
from flask import Response

SCIM_JSON = "application/scim+json; charset=utf-8"


def scim_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    if body is None:
        response = Response(status=status)
        del response.headers["Content-Type"]  # no body, no media type (werkzeug's default is text/html)
    else:
        response = Response(orjson.dumps(body), status=status, content_type=SCIM_JSON)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response
