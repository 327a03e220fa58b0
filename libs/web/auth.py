"""Bearer-token check for SCIM clients (RFC 7644 §2, RFC 6750).

Tokens are compared in constant time against every configured token (two may be valid
at once during a rotation); a missing or wrong token is 401 with ``WWW-Authenticate``.
"""

from __future__ import annotations

import hmac

from flask import Flask, request

from libs.scim.errors import Unauthorized

OPEN_PATHS = ("/metrics", "/healthz", "/readyz")


def check_bearer(header: str | None, tokens: tuple[str, ...]) -> None:
    if not header:
        raise Unauthorized("The Authorization header is missing.")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized("Use 'Authorization: Bearer <token>'.")
    presented_bytes = presented.strip().encode()
    ok = False
    for token in tokens:  # no early exit: the time taken does not tell which token matched
        ok |= hmac.compare_digest(presented_bytes, token.encode())
    if not ok:
        raise Unauthorized("The bearer token is not valid.")


def init_app(app: Flask, tokens: tuple[str, ...]) -> None:
    if not tokens:
        raise RuntimeError("no SCIM token configured: set SCIM_TOKEN")

    @app.before_request
    def _authenticate() -> None:
        if request.path.startswith(OPEN_PATHS):
            return
        check_bearer(request.headers.get("Authorization"), tokens)
