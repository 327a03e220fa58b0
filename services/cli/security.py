"""Operator commands of issue 5: ``scimbus tokens …`` and ``scimbus audit``.

Credentials are created, listed and revoked in the database; every front and reader picks
the change up within ``token_refresh`` seconds, so rotating a token is: create the new one,
give it to the client, revoke the old one — no restart.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import socket
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from libs.config import Settings, load_settings


def _engine(settings: Settings):
    from libs.store.session import create_engine_from_url

    return create_engine_from_url(settings.database)


def _app(settings: Settings, app: str | None) -> str:
    app = app or settings.default_app
    if app not in settings.app_names:
        sys.exit(f"scimbus: no SCIM app {app!r} is configured (SCIM_APPS)")
    return app


def cmd_tokens_create(args: argparse.Namespace) -> None:
    from libs.security.credentials import CredentialAdmin, CredentialError, parse_scopes

    settings = load_settings()
    public_key = Path(args.public_key).read_text() if args.public_key else None
    try:
        cred, secret = CredentialAdmin(_engine(settings)).create(
            _app(settings, args.app), args.name, scopes=parse_scopes(args.scopes),
            kind="client" if args.client or public_key else "token",
            expires_in=timedelta(days=args.expires_days) if args.expires_days else None, public_key=public_key,
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


def cmd_tokens_list(args: argparse.Namespace) -> None:
    from libs.security.credentials import CredentialAdmin

    settings = load_settings()
    rows = CredentialAdmin(_engine(settings)).list(args.app)
    print(f"{'APP':<16} {'NAME':<24} {'KIND':<7} {'SCOPES':<11} {'STATE':<8} {'CREATED':<20} EXPIRES")
    for c in rows:
        print(f"{c.app:<16} {c.name:<24} {c.kind:<7} {','.join(sorted(c.scopes)):<11} {c.state:<8} "
              f"{c.created_at:%Y-%m-%d %H:%M:%S}  {c.expires_at or '-'}")


def cmd_tokens_revoke(args: argparse.Namespace) -> None:
    from libs.security.credentials import CredentialAdmin, CredentialError

    settings = load_settings()
    try:
        cred = CredentialAdmin(_engine(settings)).revoke(_app(settings, args.app), args.name, actor=operator())
    except CredentialError as exc:
        sys.exit(f"scimbus: {exc}")
    print(f"revoked {cred.app}/{cred.name}; every service refuses it within {settings.token_refresh:g} s")


def cmd_tokens_rotate_key(args: argparse.Namespace) -> None:
    from libs.security.jwt_tokens import SigningKeys
    from libs.security.key_encryption import KeyEncryptionError, Sealer

    settings = load_settings()
    keys = SigningKeys(_engine(settings), max_age=timedelta(days=settings.signing_key_days),
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


def _when(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO date/time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def cmd_audit(args: argparse.Namespace) -> None:
    from libs.security import audit

    settings = load_settings()
    engine = _engine(settings)
    if args.purge:
        gone = audit.purge(engine, settings.audit_retention_days)
        print(f"purged {gone} audit rows older than {settings.audit_retention_days} days")
        return
    for entry in audit.query(engine, app=args.app, resource_id=args.user, token_name=args.token, since=args.since,
                             until=args.until, outcome=args.outcome, limit=args.limit):
        if args.json:
            print(json.dumps(entry.as_dict()))
        else:
            by = f" by={entry.actor} ({entry.detail})" if entry.actor or entry.detail else ""
            theirs = f" client-request={entry.client_request_id}" if entry.client_request_id else ""
            print(f"{entry.at:%Y-%m-%dT%H:%M:%S} {entry.app} {entry.op:<7} {entry.resource_type:<6} "
                  f"{entry.resource_id} {entry.outcome} token={entry.token_name} ip={entry.client_ip} "
                  f"request={entry.request_id}{theirs}{by}")


def _friendly(func):
    """A database that is down or not migrated is a one-line message, not a traceback."""
    def run(args: argparse.Namespace) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            func(args)
        except SQLAlchemyError as exc:
            sys.exit(f"scimbus: the database cannot be used ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                     "is it running and migrated (scimbus migrate)?")
    return run


def register(sub: argparse._SubParsersAction) -> None:
    tokens = sub.add_parser("tokens", help="create, list and revoke bearer tokens and OAuth clients")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)
    p = tsub.add_parser("create", help="a new token (or OAuth client); prints its secret once")
    p.add_argument("name")
    p.add_argument("--app", help="SCIM app (default: the default app)")
    p.add_argument("--scopes", default="read,write", help="read, write or both (default)")
    p.add_argument("--expires-days", type=float, default=0, help="days until it expires (default: never)")
    p.add_argument("--client", action="store_true", help="an OAuth client (client id + secret) instead of a token")
    p.add_argument("--public-key", help="PEM public key of an OAuth client signing RFC 7523 assertions")
    p.set_defaults(func=_friendly(cmd_tokens_create))
    p = tsub.add_parser("list", help="every credential, without secrets")
    p.add_argument("--app")
    p.set_defaults(func=_friendly(cmd_tokens_list))
    p = tsub.add_parser("revoke", help="revoke a credential by name (effective within seconds)")
    p.add_argument("name")
    p.add_argument("--app")
    p.set_defaults(func=_friendly(cmd_tokens_revoke))
    tsub.add_parser("rotate-signing-key", help="sign new OAuth access tokens with a new key").set_defaults(
        func=_friendly(cmd_tokens_rotate_key))

    p = sub.add_parser("audit", help="the audit log of writes (or --purge past the retention)")
    p.add_argument("--app")
    p.add_argument("--user", help="resource id of the user (or group) written")
    p.add_argument("--token", help="credential name")
    p.add_argument("--since", type=_when, help="ISO date/time (UTC unless given)")
    p.add_argument("--until", type=_when)
    p.add_argument("--outcome", help='"ok", "rejected" or a status such as 409')
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--purge", action="store_true", help="delete rows older than SCIM_AUDIT_RETENTION_DAYS")
    p.set_defaults(func=_friendly(cmd_audit))
