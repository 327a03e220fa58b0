"""Downstream targets the delivery tests write into: an application SQL schema, a web hook
receiver, and (in ldap.py) a real slapd."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, UniqueConstraint, create_engine

from tests.support.servers import free_port

APP_SCHEMA = MetaData()
Table("app_users", APP_SCHEMA,
      Column("scim_id", String(64), primary_key=True),
      Column("login", String(255), nullable=False, unique=True),
      Column("full_name", String(255)),
      Column("email", String(255)),
      Column("department", String(255)),
      Column("manager_login", String(255)),
      Column("enabled", Boolean, nullable=False, default=True))
Table("app_groups", APP_SCHEMA,
      Column("scim_id", String(64), primary_key=True),
      Column("name", String(255), nullable=False))
Table("app_memberships", APP_SCHEMA,
      Column("id", Integer, primary_key=True, autoincrement=True),
      Column("group_id", String(64), nullable=False),
      Column("user_id", String(64), nullable=False),
      UniqueConstraint("group_id", "user_id"))


def create_app_schema(url: str) -> None:
    """The existing application database a SQL connector writes into."""
    from libs.connectors.sql import engine_for

    engine = engine_for(url)
    APP_SCHEMA.drop_all(engine)
    APP_SCHEMA.create_all(engine)
    engine.dispose()


def sql_connector_toml(name: str, url: str, *, on_delete: str = "delete", retry: str = "") -> str:
    return f'''
[connectors.{name}]
type = "sql"
url = "{url}"
{retry}
[connectors.{name}.users]
table = "app_users"
key = "scim_id"
on_delete = "{on_delete}"
disable = {{ column = "enabled", value = false }}
[connectors.{name}.users.columns]
scim_id = "id"
login = {{ path = "userName", transform = "lowercase" }}
full_name = {{ template = "{{name.givenName}} {{name.familyName}}" }}
email = 'emails[type eq "work"].value'
department = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
manager_login = {{ path = "manager", ref = "userName", transform = "lowercase" }}
enabled = {{ path = "active", default = true }}
[connectors.{name}.groups]
table = "app_groups"
key = "scim_id"
columns = {{ scim_id = "id", name = "displayName" }}
[connectors.{name}.memberships]
table = "app_memberships"
group = "group_id"
member = "user_id"
'''


class HookReceiver:
    """A real HTTP server that records signed change events; it can be told to answer another
    status, or to take ``delay`` seconds first (an event it records then may outlive its sender's
    wait: it was applied though the sender saw a timeout)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.events: list[dict] = []
        self.arrivals: list[float] = []
        """When each of ``events`` arrived (``time.time()``)."""
        self.bad_signatures = 0
        self.status = 200
        self.delay = 0.0
        self.received = 0
        """Requests read so far, answered or not."""
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    receiver.received += 1
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    status = receiver.status
                    if status == 200:
                        stamp = self.headers.get("X-Scimbus-Timestamp", "")
                        wanted = hmac.new(receiver.secret, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
                        given = self.headers.get("X-Scimbus-Signature", "").removeprefix("sha256=")
                        if not hmac.compare_digest(wanted, given):
                            receiver.bad_signatures += 1
                            status = 401
                        else:
                            receiver.events.append(json.loads(body))
                            receiver.arrivals.append(time.time())
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def __enter__(self) -> HookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def state(self) -> dict[tuple[str, str], dict]:
        """What a consumer applying the events by version would hold: the newest event per resource."""
        out: dict[tuple[str, str], dict] = {}
        with self.lock:
            for event in self.events:
                k = (event["resourceType"], event["id"])
                if k not in out or event["seq"] >= out[k]["seq"]:
                    out[k] = event
        return {k: v for k, v in out.items() if v["type"] != "deleted"}


def app_engine(url: str):
    from libs.connectors.sql import engine_for

    return engine_for(url)


__all__ = ["APP_SCHEMA", "HookReceiver", "create_app_schema", "sql_connector_toml", "app_engine", "create_engine"]
