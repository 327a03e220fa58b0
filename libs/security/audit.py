"""The audit log: every write with who made it, from where, and how it ended.

A committed write is its ``changes`` row (the outbox row written in the write's own
transaction), which now also carries the credential's name, the client IP and the outcome.
A write the worker refused (404, 409, 412 …) gets a ``rejected_writes`` row, written after
its transaction rolled back, so it never reaches the outbox. A credential made or revoked
(``scimbus tokens``) gets a ``credential_events`` row in the same transaction, naming the
operator. ``scimbus audit`` reads all three.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import Engine, Select, String, delete, exists, false, func, literal, null, or_, select, union_all

from libs.bus.messages import WriteJob
from libs.security.credentials import utcnow
from libs.store.access import engine_of
from libs.store.directory import DirectoryStore
from libs.store.tables import changes, credential_events, delivery_cursors, rejected_writes

log = logging.getLogger("scimbus.audit")


def audit_fields(job: WriteJob) -> dict[str, Any]:
    return {"token_name": _clip(job.meta.get("token_name"), 128), "client_ip": _clip(job.meta.get("client_ip"), 64),
            "client_request_id": _clip(job.meta.get("client_request_id"), 128), "outcome": "ok"}


def _clip(value: Any, size: int) -> str | None:
    return str(value)[:size] if value is not None else None



def rejection_row(job: WriteJob, error: dict[str, Any]) -> dict[str, Any]:
    """The ``rejected_writes`` row of a write the worker refused (``error``: its SCIM error body).

    The worker inserts it in its batch's transaction, after the write's savepoint rolled
    back: the refusal is audited exactly when the batch's answers are committed.
    """
    status, scim_type = error.get("status", "500"), error.get("scimType")
    return {"app": job.app, "resource_type": job.resource_type, "resource_id": job.resource_id[:64], "op": job.op,
            "job_id": job.job_id, "request_id": _clip(job.request_id, 128), **audit_fields(job),
            "outcome": f"{status} {scim_type}" if scim_type else str(status), "at": utcnow()}


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    app: str
    op: str
    resource_type: str
    resource_id: str
    outcome: str
    token_name: str | None
    client_ip: str | None
    request_id: str | None
    """Ours (the gateway's); the client's own X-Request-Id is ``client_request_id``."""
    job_id: str | None
    actor: str | None = None
    """The operator (user@host) who made or revoked a credential; None for writes."""
    detail: str | None = None
    client_request_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


_COLUMNS = ("at", "app", "op", "resource_type", "resource_id", "outcome", "token_name", "client_ip", "request_id",
            "job_id")
_NONE = null().cast(String)


def _writes(table) -> Select:
    return select(*(table.c[c] for c in _COLUMNS), _NONE.label("actor"), _NONE.label("detail"),
                  table.c.client_request_id)


def _credential_events() -> Select:
    """Credentials made and revoked, as audit entries: op create/revoke, resource the
    credential's id, token_name its name."""
    e = credential_events
    return select(e.c.at, e.c.app, e.c.action.label("op"), literal("Credential", String).label("resource_type"),
                  e.c.credential_id.label("resource_id"), literal("ok", String).label("outcome"),
                  e.c.name.label("token_name"), _NONE.label("client_ip"), _NONE.label("request_id"),
                  _NONE.label("job_id"), e.c.actor, (e.c.kind + " scopes=" + e.c.scopes).label("detail"),
                  _NONE.label("client_request_id"))


def query(engine: Engine | DirectoryStore, *, app: str | None = None, resource_id: str | None = None, token_name: str | None = None,
          since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
          limit: int = 1000) -> Iterator[AuditEntry]:
    """Audit entries, oldest first; ``outcome`` is "ok", "rejected" or a status such as "409"."""
    parts = []
    for table, stmt in ((changes, _writes(changes)), (rejected_writes, _writes(rejected_writes)),
                        (credential_events, _credential_events())):
        columns = stmt.selected_columns
        if app:
            stmt = stmt.where(columns.app == app)
        if resource_id:
            stmt = stmt.where(columns.resource_id == resource_id)
        if token_name:
            stmt = stmt.where(columns.token_name == token_name)
        if since:
            stmt = stmt.where(columns.at >= since)
        if until:
            stmt = stmt.where(columns.at < until)
        if outcome == "rejected" and table is not rejected_writes:
            stmt = stmt.where(false())
        elif outcome and outcome != "rejected":
            stmt = stmt.where(columns.outcome.startswith(outcome))
        parts.append(stmt)
    union = union_all(*parts).subquery()
    with engine_of(engine).connect() as conn:
        for row in conn.execute(select(union).order_by(union.c.at).limit(limit)):
            yield AuditEntry(**row._mapping)


def purge(engine: Engine | DirectoryStore, retention_days: int) -> int:
    """Delete audit rows older than the retention; returns how many went.

    ``changes`` is also the outbox: a change some connector has not handled yet (past the
    slowest delivery cursor) stays, however old, so a purge never loses a delivery.
    """
    horizon = utcnow() - timedelta(days=retention_days)
    handled = select(func.min(delivery_cursors.c.seq)).scalar_subquery()
    with engine_of(engine).begin() as conn:
        gone = conn.execute(delete(changes).where(
            changes.c.at < horizon,
            or_(~exists().select_from(delivery_cursors), changes.c.seq <= handled),
        )).rowcount
        gone += conn.execute(delete(rejected_writes).where(rejected_writes.c.at < horizon)).rowcount
        gone += conn.execute(delete(credential_events).where(credential_events.c.at < horizon)).rowcount
    return gone
