"""Operator commands of issue 5: ``scimbus tokens …`` and ``scimbus audit``.

Credentials are created, listed and revoked in the database; every front and reader picks
the change up within ``token_refresh`` seconds, so rotating a token is: create the new one,
give it to the client, revoke the old one — no restart.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from libs.config import Settings, load_settings


def _store(settings: Settings):
    from libs.store.access import open_store

    return open_store(settings)


def _app(settings: Settings, app: str | None) -> str:
    app = app or settings.default_app
    if app not in settings.app_names:
        sys.exit(f"scimbus: no SCIM app {app!r} is configured (SCIM_APPS)")
    return app


def _friendly(func):
    """A database that is down or not migrated is a one-line message, not a traceback."""
    @functools.wraps(func)
    def run(*args, **kwargs) -> None:
        from libs.store.errors import DatabaseError

        try:
            func(*args, **kwargs)
        except DatabaseError as exc:
            sys.exit(f"scimbus: the database cannot be used ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                     "is it running and migrated (scimbus migrate)?")
    return run


@click.group("tokens")
def cmd_tokens() -> None:
    """Create, list and revoke bearer tokens and OAuth clients."""


_APP = click.option("--app", help="SCIM app [default: the default app]")


@cmd_tokens.command("create")
@click.argument("name")
@_APP
@click.option("--scopes", default="read,write", show_default=True, help="read, write or both")
@click.option("--expires-days", type=click.FloatRange(min=0), default=0, help="days until it expires; 0: never")
@click.option("--client", is_flag=True, help="an OAuth client (client id + secret) instead of a token")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False),
              help="PEM public key of an OAuth client signing RFC 7523 assertions")
@_friendly
def cmd_tokens_create(name: str, app: str | None, scopes: str, expires_days: float, client: bool,
                      public_key: str | None) -> None:
    """A new token (or OAuth client); prints its secret once."""
    from libs.security.credentials import CredentialAdmin, CredentialError, parse_scopes

    settings = load_settings()
    public_key = Path(public_key).read_text() if public_key else None
    try:
        cred, secret = CredentialAdmin(_store(settings)).create(
            _app(settings, app), name, scopes=parse_scopes(scopes),
            kind="client" if client or public_key else "token",
            expires_in=timedelta(days=expires_days) if expires_days else None, public_key=public_key,
            actor=operator())
    except CredentialError as exc:
        sys.exit(f"scimbus: {exc}")
    out = {"app": cred.app, "name": cred.name, "kind": cred.kind, "scopes": sorted(cred.scopes),
           "expires_at": cred.expires_at.isoformat() if cred.expires_at else None}
    if cred.kind == "client":
        out.update(client_id=cred.id, client_secret=secret, token_endpoint="/oauth/token")
    else:
        out["token"] = secret
    print(json.dumps(out, indent=2))
    print("scimbus: the secret is shown once; only its hash is stored.", file=sys.stderr)


@cmd_tokens.command("list")
@click.option("--app", help="only this SCIM app")
@_friendly
def cmd_tokens_list(app: str | None) -> None:
    """Every credential, without secrets."""
    from libs.security.credentials import CredentialAdmin

    settings = load_settings()
    rows = CredentialAdmin(_store(settings)).list(app)
    print(f"{'APP':<16} {'NAME':<24} {'KIND':<7} {'SCOPES':<11} {'STATE':<8} {'CREATED':<20} EXPIRES")
    for c in rows:
        print(f"{c.app:<16} {c.name:<24} {c.kind:<7} {','.join(sorted(c.scopes)):<11} {c.state:<8} "
              f"{c.created_at:%Y-%m-%d %H:%M:%S}  {c.expires_at or '-'}")


@cmd_tokens.command("revoke")
@click.argument("name")
@_APP
@_friendly
def cmd_tokens_revoke(name: str, app: str | None) -> None:
    """Revoke a credential by NAME (every service refuses it within seconds)."""
    from libs.security.credentials import CredentialAdmin, CredentialError

    settings = load_settings()
    try:
        cred = CredentialAdmin(_store(settings)).revoke(_app(settings, app), name, actor=operator())
    except CredentialError as exc:
        sys.exit(f"scimbus: {exc}")
    print(f"revoked {cred.app}/{cred.name}; every service refuses it within {settings.token_refresh:g} s")


@cmd_tokens.command("rotate-signing-key")
@_friendly
def cmd_tokens_rotate_key() -> None:
    """Sign new OAuth access tokens with a new key."""
    from libs.security.jwt_tokens import SigningKeys
    from libs.security.key_encryption import KeyEncryptionError, Sealer

    settings = load_settings()
    keys = SigningKeys(_store(settings), max_age=timedelta(days=settings.signing_key_days),
                       token_ttl=settings.access_token_ttl, refresh=0, sealer=lambda: Sealer.from_settings(settings))
    try:
        kid = keys.rotate(actor=operator())
    except KeyEncryptionError as exc:
        sys.exit(f"scimbus: {exc}")
    print(f"new signing key {kid}; the previous one stays published {settings.access_token_ttl} s")


def operator() -> str:
    """Who runs this command, as this host knows them (sudo's caller too): the audit's actor
    of a credential made or revoked. Whoever runs it holds the database's credentials, so
    this is as good as the host's own accounts, no better."""
    user = getpass.getuser()
    caller = os.environ.get("SUDO_USER")
    who = f"{caller} (sudo as {user})" if caller and caller != user else user
    return f"{who}@{socket.gethostname()}"


class _When(click.ParamType):
    """An ISO date/time, UTC unless it says otherwise."""

    name = "ISO-TIME"

    def convert(self, value, param, ctx) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"not an ISO date/time: {value!r}", param, ctx)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.command("audit")
@click.option("--app", help="only this SCIM app")
@click.option("--resource", "--user", "user",
              help="resource id of the user (or group) written; shows each connector's outcome per change")
@click.option("--request", help="request id (ours, the X-Request-Id of the answer, or the client's own); "
                                "shows each connector's outcome per change")
@click.option("--token", help="credential name")
@click.option("--since", type=_When(), help="ISO date/time (UTC unless given)")
@click.option("--until", type=_When(), help="ISO date/time (UTC unless given)")
@click.option("--outcome", help='"ok", "rejected" or a status such as 409')
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--purge", is_flag=True, help="delete rows older than SCIM_AUDIT_RETENTION_DAYS")
@_friendly
def cmd_audit(app, user, request, token, since, until, outcome, limit, as_json, purge) -> None:
    """The audit log of writes (or --purge past the retention)."""
    from libs.security import audit

    settings = load_settings()
    store = _store(settings)
    if purge:
        gone = audit.purge(store, settings.audit_retention_days)
        print(f"purged {gone} audit rows older than {settings.audit_retention_days} days")
        return
    from libs.store.deliveries import connector_interests

    # Per change, each connector's outcome: asked for one resource or request, not for the whole log.
    interests = connector_interests(settings) if user or request else {}
    for entry in audit.query(store, app=app, resource_id=user, token_name=token, since=since,
                             until=until, outcome=outcome, request_id=request, limit=limit):
        outcomes = audit.deliveries(store, entry, interests) if interests else []
        if as_json:
            print(json.dumps({**entry.as_dict(), **({"deliveries": [o.as_dict() for o in outcomes]}
                                                    if interests else {})}))
            continue
        by = f" by={entry.actor} ({entry.detail})" if entry.actor or entry.detail else ""
        theirs = f" client-request={entry.client_request_id}" if entry.client_request_id else ""
        print(f"{entry.at:%Y-%m-%dT%H:%M:%S} {entry.app} {entry.op:<7} {entry.resource_type:<6} "
              f"{entry.resource_id} {entry.outcome} token={entry.token_name} ip={entry.client_ip} "
              f"request={entry.request_id}{theirs}{by}")
        for o in outcomes:
            print(f"    -> {o.connector}: {_outcome_text(o)}")


def _outcome_text(o) -> str:
    when = f" at {o.at:%Y-%m-%dT%H:%M:%S}" if o.at else ""
    if o.status == "failing":
        retry = f", next attempt at {o.next_attempt_at:%Y-%m-%dT%H:%M:%S}" if o.next_attempt_at else ""
        return f"failing after {o.attempts} attempt(s){retry}: {o.detail}"
    if o.status == "dead-lettered":
        return f"dead-lettered{when}: {o.detail} (scimbus deliveries retry {o.connector})"
    if o.status == "skipped":
        return f"not sent{when}: outside the connector's scope"
    return f"{o.status}{when}"


COMMANDS = (cmd_tokens, cmd_audit)
