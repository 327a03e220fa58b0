"""Who is calling, for which SCIM app, with which scopes (RFC 7644 §2, RFC 6750).

A bearer credential is one of:

- a token made with ``scimbus tokens create`` (or the bootstrap ``SCIM_TOKEN``), looked up
  by its SHA-256 in the cached credentials table (``libs.security.credentials``);
- an access token this deployment issued at ``/oauth/token`` (a JWT whose audience names
  the app);
- a JWT Entra issued for its provisioning service, when an Entra tenant is configured.

Each credential belongs to one app: used on another app's URL it is simply not valid (401).
Reads need the ``read`` scope, writes ``write`` (403 without it). When rate limiting is on,
each credential's requests are counted in Redis across every process (429 + Retry-After).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, g
from redis.backoff import NoBackoff
from redis.retry import Retry

from libs.bus.connection import connect
from libs.config import Settings
from libs.scim.errors import Forbidden, Unauthorized
from libs.security.credentials import CredentialCache
from libs.security.jwt_tokens import (
    ISSUER, EntraVerifier, InvalidToken, SigningKeys, looks_like_jwt, unverified_issuer, verify_access_token,
)
from libs.security.key_encryption import Sealer
from libs.security.ratelimit import RateLimiter
from libs.store.session import create_engine_from_url
from libs.web.request import current_request

OPEN_PATHS = ("/metrics", "/healthz", "/readyz", "/oauth/")


@dataclass(frozen=True)
class Principal:
    app: str
    name: str
    scopes: frozenset[str]


class Authenticator:
    def __init__(self, settings: Settings, engine) -> None:
        self.settings = settings
        bootstrap = CredentialCache.bootstrap_tokens(settings.tokens, settings.default_app)
        self.credentials = CredentialCache(engine, settings.token_refresh, bootstrap)
        # The key encryption key is looked up only to sign (the front's /oauth/token): a reader never needs it.
        self.keys = SigningKeys(engine, max_age=timedelta(days=settings.signing_key_days),
                                token_ttl=settings.access_token_ttl, refresh=settings.token_refresh,
                                sealer=lambda: Sealer.from_settings(settings))
        self.entra = EntraVerifier.from_settings(settings)

    def authenticate(self, header: str | None, app: str) -> Principal:
        if not header:
            raise Unauthorized("The Authorization header is missing.")
        scheme, _, presented = header.partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("Use 'Authorization: Bearer <token>'.")
        if looks_like_jwt(presented):
            return self._jwt(presented, app)
        cred = self.credentials.find(presented)
        if cred is None or cred.app != app:
            raise Unauthorized("The bearer token is not valid for this SCIM app.")
        return Principal(cred.app, cred.name, cred.scopes)

    def _jwt(self, token: str, app: str) -> Principal:
        issuer = unverified_issuer(token)
        try:
            if issuer == ISSUER:
                claims = verify_access_token(self.keys, token, app, self.settings.jwt_leeway)
                # The client's revocation (or expiry) ends its access tokens within token_refresh
                # seconds, as it ends a bearer token's, not when the token expires.
                client = self.credentials.client(claims.client_id or "")
                if client is None or client.app != app:
                    raise InvalidToken("the OAuth client it was issued to is revoked or expired")
            elif self.entra is not None and issuer in self.entra.issuers:
                claims = self.entra.verify(token, app)
            else:
                raise InvalidToken("unknown issuer")
        except InvalidToken as exc:
            raise Unauthorized(f"The bearer token is not valid for this SCIM app ({str(exc)[:100]}).") from exc
        return Principal(claims.app, claims.name, claims.scopes)


def required_scope(method: str, path: str) -> str:
    if method in ("GET", "HEAD") or (method == "POST" and path.rstrip("/").endswith("/.search")):
        return "read"
    return "write"


def request_app(settings: Settings, view_args: dict | None) -> str:
    """The app named in the URL (``/scim/<app>/…``, in the request's ``view_args``), else the
    default app."""
    app = (view_args or {}).get("app")
    return app if isinstance(app, str) else settings.default_app


def init_app(app: Flask, settings: Settings) -> None:
    store = app.extensions.get("scim.store")
    engine = store.engine if store is not None else create_engine_from_url(settings.database)
    authenticator = Authenticator(settings, engine)
    app.extensions["scim.auth"] = authenticator
    limiter = None
    if settings.rate_limit > 0:
        # No retries: with Redis down the limiter lets requests through at once (see ratelimit.py).
        redis = connect(settings.redis_url, socket_timeout=1, socket_connect_timeout=1,
                               retry=Retry(NoBackoff(), 0))
        limiter = RateLimiter(redis, settings.rate_limit, settings.rate_window)

    @app.before_request
    def _authenticate() -> None:
        req = current_request()
        path = req.path
        if path.startswith(OPEN_PATHS):
            return
        principal = authenticator.authenticate(req.headers.get("Authorization"),
                                               request_app(settings, req.view_args))
        g.scim_principal = principal
        scope = required_scope(req.method, path)
        if scope not in principal.scopes:
            raise Forbidden(f"The credential {principal.name!r} lacks the {scope!r} scope.")
        if limiter is not None:
            limiter.hit(principal.app, principal.name)
