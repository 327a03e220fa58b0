"""OAuth 2.0 client credentials (RFC 6749 §4.4) for SCIM clients, and the JWKS of its keys.

``POST /oauth/token`` authenticates an OAuth client made with ``scimbus tokens create
--client`` by its secret (HTTP Basic or form fields, RFC 6749 §2.3.1) or by a signed
``client_assertion`` (RFC 7523 §2.2: iss = sub = client id, aud = this endpoint's URL under
``SCIM_PUBLIC_URL``, exp, jti used once), and answers a short-lived access token: a JWT for
the client's app, signed with the current key of ``GET /oauth/jwks``. Errors use RFC 6749
§5.2's shape, not SCIM's.
"""

from __future__ import annotations

import logging
import time

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Blueprint, Response, current_app, jsonify, request

from libs.security.credentials import Credential, CredentialError, parse_scopes
from libs.security.jwt_tokens import issue_access_token
from libs.security.key_encryption import KeyEncryptionError

bp = Blueprint("oauth", __name__, url_prefix="/oauth")
log = logging.getLogger("scimbus.oauth")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384"]


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


@bp.errorhandler(OAuthError)
def _oauth_error(exc: OAuthError) -> Response:
    response = jsonify(error=exc.error, error_description=exc.description)
    response.status_code = exc.status
    response.headers["Cache-Control"] = "no-store"
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="scimbus"'
    return response


def _auth():
    return current_app.extensions["scim.auth"]


def _client_by_secret(client_id: str, secret: str) -> Credential:
    cred = _auth().credentials.find(secret, kind="client")
    if cred is None or cred.id != client_id:
        raise OAuthError("invalid_client", "Client authentication failed.", 401)
    return cred


def _client_by_assertion(assertion: str) -> Credential:
    settings = current_app.extensions["scim.settings"]
    # The audience is our configured URL: one derived from Host or X-Forwarded-Host (which the
    # client sends) would accept an assertion the client made for any other server.
    audience = settings.token_endpoint
    if audience is None:
        raise OAuthError("invalid_client", "Client assertions are not accepted here (SCIM_PUBLIC_URL is not set).",
                         401)
    try:
        client_id = jwt.decode(assertion, options={"verify_signature": False}).get("iss")
        cred = _auth().credentials.client(client_id) if isinstance(client_id, str) else None
        if cred is None or not cred.public_key:
            raise OAuthError("invalid_client", "Unknown client, or no public key registered for it.", 401)
        claims = jwt.decode(assertion, load_pem_public_key(cred.public_key.encode()), algorithms=ASSERTION_ALGORITHMS,
                            audience=audience, issuer=client_id, subject=client_id, leeway=settings.jwt_leeway,
                            options={"require": ["exp", "iss", "sub", "aud", "jti"]})
    except jwt.InvalidAudienceError as exc:
        raise OAuthError("invalid_client", f"The client assertion's aud must be {audience}.", 401) from exc
    except (jwt.PyJWTError, ValueError) as exc:
        raise OAuthError("invalid_client", f"The client assertion is not valid: {str(exc)[:100]}", 401) from exc
    _use_once(client_id, str(claims["jti"]), int(claims["exp"]))
    return cred


def _use_once(client_id: str, jti: str, exp: int) -> None:
    """RFC 7523 §3 item 7: an assertion's jti is accepted once, until the assertion expires."""
    redis = current_app.extensions["scim.bus"].redis
    ttl = max(1, exp - int(time.time()) + current_app.extensions["scim.settings"].jwt_leeway)
    if not redis.set(f"scimbus:oauth:jti:{client_id}:{jti[:128]}", 1, nx=True, ex=ttl):
        raise OAuthError("invalid_client", "This client assertion was already used.", 401)


def _client() -> Credential:
    form = request.form
    if form.get("client_assertion_type") == ASSERTION_TYPE and form.get("client_assertion"):
        return _client_by_assertion(form["client_assertion"])
    basic = request.authorization
    if basic is not None and basic.type == "basic" and basic.username and basic.password:
        return _client_by_secret(basic.username, basic.password)
    if form.get("client_id") and form.get("client_secret"):
        return _client_by_secret(form["client_id"], form["client_secret"])
    raise OAuthError("invalid_client", "Send client_id and client_secret, or a client_assertion.", 401)


@bp.post("/token")
def token() -> Response:
    if request.form.get("grant_type") != "client_credentials":
        raise OAuthError("unsupported_grant_type", "Only grant_type=client_credentials is supported.")
    client = _client()
    scopes = client.scopes
    if request.form.get("scope"):
        try:
            scopes = parse_scopes(request.form["scope"])
        except CredentialError as exc:
            raise OAuthError("invalid_scope", str(exc)) from exc
        if not scopes <= client.scopes:
            raise OAuthError("invalid_scope", f"This client may ask for {sorted(client.scopes)} only.")
    settings = current_app.extensions["scim.settings"]
    try:
        access = issue_access_token(_auth().keys, app=client.app, name=client.name, client_id=client.id,
                                    scopes=scopes, ttl=settings.access_token_ttl)
    except KeyEncryptionError as exc:  # the operator's to fix; tokens already issued still verify
        log.error("cannot sign an access token: %s", exc)
        raise OAuthError("temporarily_unavailable", "The server cannot sign tokens now; its log says why.",
                         503) from exc
    response = jsonify(access_token=access, token_type="Bearer", expires_in=settings.access_token_ttl,
                       scope=" ".join(sorted(scopes)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/jwks")
def jwks() -> Response:
    response = jsonify(_auth().keys.jwks())
    response.headers["Cache-Control"] = "max-age=60"
    return response
