"""JWT bearer tokens: the OAuth access tokens scimbus issues, and Entra's own.

scimbus signs its access tokens (RS256) with a key kept in ``signing_keys``: the newest
key signs, and it is replaced once it is ``signing_key_days`` old. A replaced key stays in
the published JWKS for one token lifetime, so tokens it signed stay valid until they expire
(rotation without downtime). The audience names the SCIM app (``scimbus:<app>``): a token of
one app is not valid for another.

Entra ID, when ``entra_tenant_id`` is set, may instead send a JWT it issued itself: issuer
of that tenant, audience 8adf8e6e-67b2-4cf2-a259-e3dc5476c621 (the Entra provisioning
service), signature checked against a configured JWKS (file, or URL fetched and cached),
issued to an Entra application that ``entra_callers`` names for the SCIM app called.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Mapping

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import Engine, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from libs.config import EntraCaller, Settings
from libs.security.credentials import MISS_REFRESH, SCOPES, utcnow
from libs.security.key_encryption import KeyEncryptionError, Sealer
from libs.store.access import engine_of
from libs.store.directory import DirectoryStore
from libs.store.session import read_reconnecting
from libs.store.tables import credential_events
from libs.store.tables import signing_keys as K

AUTOMATIC = "scimbus (key age)"
"""The audit's actor of a rotation no operator asked for: the signing key reached its age."""

log = logging.getLogger("scimbus.auth")

ISSUER = "scimbus"
ALGORITHM = "RS256"
ENTRA_AUDIENCE = "8adf8e6e-67b2-4cf2-a259-e3dc5476c621"
"""The application id of Entra's provisioning service: the audience of the tokens it issues."""
ENTRA_JWKS_TTL = 3600
"""Seconds a fetched Entra JWKS is used before it is fetched again."""


class InvalidToken(ValueError):
    """A JWT that is malformed, wrongly signed, expired or meant for someone else."""


@dataclass(frozen=True)
class TokenClaims:
    app: str
    name: str
    scopes: frozenset[str]
    client_id: str | None = None
    """The OAuth client an access token of ours was issued to (None for Entra's tokens)."""


def audience(app: str) -> str:
    return f"scimbus:{app}"


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


def unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def new_private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem_of(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class _PublicKey:
    key: Any
    jwk: dict[str, Any]

    @classmethod
    def parse(cls, kid: str, public_pem: str) -> _PublicKey:
        key = serialization.load_pem_public_key(public_pem.encode())
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        return cls(key, {**jwk, "kid": kid, "use": "sig", "alg": ALGORITHM})


class SigningKeys:
    """The signing keys in the database, cached for ``refresh`` seconds.

    Verifying a token and publishing the JWKS use only the public halves, each parsed once
    per process (issue 16: a forged token, or a JWKS request, used to make the server parse
    stored private keys, 20-50 ms of CPU each, before any signature was checked). The private
    half of the current key is read, opened with the key encryption key (``sealer``) and
    parsed only to sign, once per key and process; a process that only verifies (the
    reader) never needs the key encryption key."""

    def __init__(self, engine: Engine | DirectoryStore, *, max_age: timedelta, token_ttl: int, refresh: float,
                 sealer: Callable[[], Sealer] | None = None) -> None:
        self.engine, self.max_age, self.token_ttl, self.refresh = engine_of(engine), max_age, token_ttl, refresh
        self._sealer = sealer
        self._rows: list[Any] | None = None
        self._public: dict[str, _PublicKey] = {}
        self._jwks: dict[str, Any] = {"keys": []}
        self._signer: tuple[str, Any] | None = None
        self._loaded_at = self._missed_at = 0.0
        self._lock = threading.Lock()

    def _published(self) -> list[Any]:
        if self._rows is not None and time.monotonic() - self._loaded_at < self.refresh:
            return self._rows
        with self._lock:
            horizon = utcnow() - timedelta(seconds=self.token_ttl)
            rows = read_reconnecting(self.engine, lambda conn: conn.execute(
                select(K.c.kid, K.c.public_pem, K.c.created_at, K.c.retired_at)
                .where(or_(K.c.retired_at.is_(None), K.c.retired_at > horizon))
                .order_by(K.c.created_at.desc())).all())
            public = {r.kid: self._public.get(r.kid) or _PublicKey.parse(r.kid, r.public_pem) for r in rows}
            self._public, self._jwks = public, {"keys": [public[r.kid].jwk for r in rows]}
            self._rows, self._loaded_at = rows, time.monotonic()
            return rows

    def _seal(self) -> Sealer:
        if self._sealer is None:
            raise KeyEncryptionError("this process verifies tokens only; it has no key encryption key")
        return self._sealer()

    def rotate(self, actor: str = AUTOMATIC) -> str:
        """Start signing with a new key; the old ones stay published one token lifetime.

        The audit gets a ``rotate-key`` event in the same transaction: who (``actor``, the
        operator, or ``AUTOMATIC`` when the key came of age) and when, naming the key's id."""
        kid, now = uuid.uuid4().hex, utcnow()
        private_pem = new_private_pem()
        row = {"kid": kid, "public_pem": public_pem_of(private_pem),
               "sealed_private_key": self._seal().seal(private_pem), "created_at": now}
        with self.engine.begin() as conn:
            conn.execute(update(K).where(K.c.retired_at.is_(None)).values(retired_at=now))
            conn.execute(insert(K), row)
            conn.execute(insert(credential_events), {
                "at": now, "app": "*", "action": "rotate-key", "credential_id": kid, "name": "signing key",
                "kind": "key", "scopes": "", "expires_at": None, "actor": actor[:128]})
        self._rows = None
        return kid

    def current(self) -> tuple[str, Any]:
        """(kid, private key) of the key that signs now, rotating a key that got too old."""
        active = [r for r in self._published() if r.retired_at is None]
        if active:
            created = active[0].created_at
            created = created if created.tzinfo else created.replace(tzinfo=utcnow().tzinfo)
            if utcnow() - created >= self.max_age:
                active = []
        if not active:
            try:
                self.rotate()
            except IntegrityError:  # another process rotated at the same moment: either key will do
                self._rows = None
            active = [r for r in self._published() if r.retired_at is None]
        kid = active[0].kid
        signer = self._signer
        if signer is None or signer[0] != kid:
            sealed = read_reconnecting(self.engine, lambda conn: conn.execute(
                select(K.c.sealed_private_key).where(K.c.kid == kid)).scalar_one())
            private = serialization.load_pem_private_key(self._seal().open(sealed).encode(), password=None)
            self._signer = signer = (kid, private)
        return signer

    def jwks(self) -> dict[str, Any]:
        """The published public keys; the same object until the set of keys changes."""
        self._published()
        return self._jwks

    def public_key(self, kid: str) -> Any:
        self._published()
        found = self._public.get(kid)
        # A key made by another process a moment ago? Look again, but at most MISS_REFRESH
        # times a second: forged tokens with made-up kids must not each cost a query.
        if found is None and time.monotonic() - self._missed_at >= MISS_REFRESH:
            self._missed_at, self._rows = time.monotonic(), None
            self._published()
            found = self._public.get(kid)
        return found.key if found is not None else None


def issue_access_token(keys: SigningKeys, *, app: str, name: str, client_id: str, scopes: frozenset[str],
                       ttl: int) -> str:
    kid, key = keys.current()
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": audience(app), "sub": name, "client_id": client_id,
              "scope": " ".join(sorted(scopes)), "iat": now, "nbf": now, "exp": now + ttl, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def verify_access_token(keys: SigningKeys, token: str, app: str, leeway: int) -> TokenClaims:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = keys.public_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("the token's signing key is unknown")
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=audience(app), issuer=ISSUER,
                            leeway=leeway, options={"require": ["exp", "iat", "aud", "iss", "sub", "client_id"]})
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    scopes = frozenset(str(claims.get("scope", "")).split()) & SCOPES
    return TokenClaims(app, f"oauth:{claims['sub']}", scopes, str(claims["client_id"]))


class EntraVerifier:
    """Checks the JWTs Entra issues for its provisioning service to one tenant.

    Issuer, audience and tenant are the same for every provisioning app of the tenant (and
    for anything else of that tenant that asks Entra for a token to the provisioning
    service): the calling application (``appid``/``azp``, and ``oid`` where configured) is
    what pins a token to the one Entra app configured for a SCIM app."""

    def __init__(self, tenant_id: str, jwks_source: str, callers: Mapping[str, tuple[EntraCaller, ...]],
                 leeway: int) -> None:
        self.tenant_id, self.source, self.callers, self.leeway = tenant_id, jwks_source, callers, leeway
        self.issuers = (f"https://sts.windows.net/{tenant_id}/", f"https://login.microsoftonline.com/{tenant_id}/v2.0")
        self._client = jwt.PyJWKClient(jwks_source, lifespan=ENTRA_JWKS_TTL) if jwks_source.startswith(
            ("https://", "http://")) else None

    @classmethod
    def from_settings(cls, settings: Settings) -> EntraVerifier | None:
        """None when Entra JWTs are off; ``load_settings`` has checked the rest."""
        if not settings.entra_tenant_id:
            return None
        return cls(settings.entra_tenant_id, settings.entra_jwks, settings.entra_callers_by_app, settings.jwt_leeway)

    def _key(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        kid = jwt.get_unverified_header(token).get("kid")
        keys = jwt.PyJWKSet.from_json(Path(self.source).read_text())
        for key in keys.keys:
            if key.key_id == kid:
                return key.key
        raise InvalidToken("the token's signing key is not in the configured Entra JWKS")

    def verify(self, token: str, app: str) -> TokenClaims:
        allowed = self.callers.get(app)
        if not allowed:
            raise InvalidToken(f"Entra tokens are not accepted for the app {app!r}")
        try:
            claims = jwt.decode(token, self._key(token), algorithms=["RS256"], audience=ENTRA_AUDIENCE,
                                issuer=self.issuers, leeway=self.leeway,
                                options={"require": ["exp", "nbf", "iss", "aud"]})
        except (jwt.PyJWTError, OSError) as exc:
            raise InvalidToken(str(exc)) from exc
        if claims.get("tid", self.tenant_id) != self.tenant_id:
            raise InvalidToken("the token was issued for another tenant")
        caller = _calling_app(claims)
        object_id = str(claims.get("oid", "")).lower()
        if caller is None or not any(c.app_id == caller and c.object_id in (None, object_id) for c in allowed):
            raise InvalidToken("the token was issued to an application this SCIM app does not accept")
        return TokenClaims(app, f"entra:{caller}", SCOPES)


def _calling_app(claims: dict[str, Any]) -> str | None:
    """The application the token was issued to: ``appid`` (v1 tokens) or ``azp`` (v2); both,
    if present, must agree."""
    named = {str(claims[c]).lower() for c in ("appid", "azp") if c in claims}
    return named.pop() if len(named) == 1 else None
