"""Bearer tokens and OAuth clients of each SCIM app, stored only as hashes.

A secret is 32 random bytes (``secrets.token_urlsafe``), shown once when created; the
database keeps its SHA-256. A fast unsalted hash is the right tool here, not a password
hash (bcrypt, argon2): the secret has 256 bits of entropy, so there is nothing to guess
from a leaked digest, and every request has to be checked in microseconds. Lookup is by
that digest: a timing difference can only tell an attacker about the digest of what they
sent, never about a stored secret.

``CredentialCache`` is what the front and the reader consult on every request: it re-reads
the (small) credentials table at most every ``token_refresh`` seconds, so a token created or
revoked with ``scimbus tokens`` takes effect in every process within seconds, without a
restart. The bootstrap token of the local run (``SCIM_TOKEN`` or ``var/token``) is a
credential of the default app named ``bootstrap``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from libs.scim.errors import Unavailable
from libs.store.access import engine_of
from libs.store.directory import DirectoryStore
from libs.store.session import read_reconnecting
from libs.store.tables import credential_events
from libs.store.tables import credentials as C

log = logging.getLogger("scimbus.auth")

SCOPES = frozenset({"read", "write"})
MISS_REFRESH = 0.25
"""Seconds between re-reads caused by unknown secrets: a new token works at once, and a
stream of wrong tokens costs the database at most four small queries a second per process."""
TOKEN_PREFIX = "scimbus_"


class CredentialError(ValueError):
    """An operator's request about credentials cannot be carried out (name taken, unknown)."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_scopes(raw: str) -> frozenset[str]:
    scopes = frozenset(s for s in raw.replace(",", " ").split() if s)
    if not scopes or not scopes <= SCOPES:
        raise CredentialError(f"scopes must be among {sorted(SCOPES)}, not {raw!r}")
    return scopes


@dataclass(frozen=True)
class Credential:
    id: str
    app: str
    name: str
    kind: str
    scopes: frozenset[str]
    secret_hash: str
    created_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    public_key: str | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and _utc(self.expires_at) <= now

    @property
    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(utcnow()) else "active"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _from_row(row) -> Credential:
    return Credential(row.id, row.app, row.name, row.kind, frozenset(row.scopes.split()), row.secret_hash,
                      row.created_at, row.expires_at, row.revoked_at, row.public_key)


class CredentialAdmin:
    """Create, list and revoke credentials (``scimbus tokens``, tests)."""

    def __init__(self, engine: Engine | DirectoryStore) -> None:
        self.engine = engine_of(engine)

    def create(self, app: str, name: str, *, scopes: frozenset[str] = SCOPES, kind: str = "token",
               expires_in: timedelta | None = None, public_key: str | None = None,
               actor: str | None = None) -> tuple[Credential, str]:
        """A new credential and its secret (the only time the secret exists outside its holder);
        ``actor`` (the operator) goes into the audit event written with it."""
        secret = new_secret()
        now = utcnow()
        row = {"id": uuid.uuid4().hex, "app": app, "name": name, "kind": kind, "secret_hash": hash_secret(secret),
               "public_key": public_key, "scopes": " ".join(sorted(scopes)), "created_at": now,
               "expires_at": now + expires_in if expires_in else None, "revoked_at": None}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(C), row)
                conn.execute(insert(credential_events), _event("create", _Row(row), now, actor))
        except IntegrityError as exc:
            raise CredentialError(f"app {app!r} already has a credential named {name!r}") from exc
        return _from_row(_Row(row)), secret

    def list(self, app: str | None = None) -> list[Credential]:
        stmt = select(C).order_by(C.c.app, C.c.created_at)
        if app:
            stmt = stmt.where(C.c.app == app)
        with self.engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(stmt)]

    def revoke(self, app: str, name: str, actor: str | None = None) -> Credential:
        now = utcnow()
        with self.engine.begin() as conn:
            done = conn.execute(update(C).where(C.c.app == app, C.c.name == name, C.c.revoked_at.is_(None))
                                .values(revoked_at=now))
            row = conn.execute(select(C).where(C.c.app == app, C.c.name == name)).first()
            if row is not None and done.rowcount:
                conn.execute(insert(credential_events), _event("revoke", row, now, actor))
        if row is None:
            raise CredentialError(f"app {app!r} has no credential named {name!r}")
        if done.rowcount == 0:
            raise CredentialError(f"{app}/{name} was already revoked")
        return _from_row(row)


class _Row:
    def __init__(self, values: dict) -> None:
        self.__dict__.update(values)


def _event(action: str, row, at: datetime, actor: str | None) -> dict:
    """The audit row of a credential made or revoked: what and by whom, never its secret or hash."""
    return {"at": at, "app": row.app, "action": action, "credential_id": row.id, "name": row.name, "kind": row.kind,
            "scopes": row.scopes, "expires_at": row.expires_at, "actor": actor[:128] if actor else None}


class CredentialCache:
    """The live credentials of every app, re-read every ``refresh`` seconds."""

    def __init__(self, engine: Engine, refresh: float, bootstrap: dict[str, Credential] | None = None) -> None:
        self.engine = engine
        self.refresh = refresh
        self.bootstrap = dict(bootstrap or {})
        self._by_hash: dict[str, Credential] | None = None
        self._clients: dict[str, Credential] = {}
        self._loaded_at = 0.0
        self._lock = threading.Lock()

    @classmethod
    def bootstrap_tokens(cls, tokens: tuple[str, ...], app: str) -> dict[str, Credential]:
        return {hash_secret(t): Credential(f"bootstrap-{i}", app, "bootstrap", "token", SCOPES, hash_secret(t))
                for i, t in enumerate(tokens)}

    def _load(self, max_age: float | None = None) -> dict[str, Credential]:
        max_age = self.refresh if max_age is None else max_age
        if self._by_hash is not None and time.monotonic() - self._loaded_at < max_age:
            return self._by_hash
        with self._lock:
            if self._by_hash is not None and time.monotonic() - self._loaded_at < max_age:
                return self._by_hash
            try:
                rows = read_reconnecting(self.engine, lambda conn: conn.execute(
                    select(C).where(C.c.revoked_at.is_(None))).all())
            except SQLAlchemyError as exc:
                if self._by_hash is None:
                    raise Unavailable("The credentials store cannot be read; retry later.") from exc
                log.warning("credentials refresh failed; keeping the cached copy: %s", type(exc).__name__)
                self._loaded_at = time.monotonic()
                return self._by_hash
            table = dict(self.bootstrap)
            table.update({r.secret_hash: _from_row(r) for r in rows})
            self._clients = {c.id: c for c in table.values() if c.kind == "client"}
            self._by_hash, self._loaded_at = table, time.monotonic()
            return table

    def find(self, secret: str, kind: str = "token") -> Credential | None:
        """The active credential whose secret this is, else None."""
        digest = hash_secret(secret)
        found = self._load().get(digest)
        if found is None:  # made a moment ago? Look again, at most MISS_REFRESH times a second
            found = self._load(min(self.refresh, MISS_REFRESH)).get(digest)
        if found is None or found.kind != kind or not hmac.compare_digest(found.secret_hash, digest):
            return None
        if found.expired(utcnow()):
            return None
        return found

    def client(self, client_id: str) -> Credential | None:
        """The active OAuth client with this id (the credential's id), else None."""
        self._load()
        found = self._clients.get(client_id)
        if found is None:  # made a moment ago? As in find(), at most MISS_REFRESH re-reads a second
            self._load(min(self.refresh, MISS_REFRESH))
            found = self._clients.get(client_id)
        return found if found is not None and not found.expired(utcnow()) else None
