"""The audit log: every write with who made it, from where, and how it ended.

A committed write is its ``changes`` row (the outbox row written in the write's own
transaction), which now also carries the credential's name, the client IP and the outcome.
A write the worker refused (404, 409, 412 …) gets a ``rejected_writes`` row, written after
its transaction rolled back, so it never reaches the outbox. ``scimbus audit`` reads both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import Engine, delete, exists, false, func, or_, select, union_all

from libs.bus.messages import WriteJob
from libs.security.credentials import utcnow
from libs.store.tables import changes, delivery_cursors, rejected_writes

log = logging.getLogger("scimbus.audit")


def audit_fields(job: WriteJob) -> dict[str, Any]:
    return {"token_name": _clip(job.meta.get("token_name"), 128), "client_ip": _clip(job.meta.get("client_ip"), 64),
            "outcome": "ok"}


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
    job_id: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


_COLUMNS = ("at", "app", "op", "resource_type", "resource_id", "outcome", "token_name", "client_ip", "request_id",
            "job_id")


def query(engine: Engine, *, app: str | None = None, resource_id: str | None = None, token_name: str | None = None,
          since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
          limit: int = 1000) -> Iterator[AuditEntry]:
    """Audit entries, oldest first; ``outcome`` is "ok", "rejected" or a status such as "409"."""
    parts = []
    for table in (changes, rejected_writes):
        stmt = select(*(table.c[c] for c in _COLUMNS))
        if app:
            stmt = stmt.where(table.c.app == app)
        if resource_id:
            stmt = stmt.where(table.c.resource_id == resource_id)
        if token_name:
            stmt = stmt.where(table.c.token_name == token_name)
        if since:
            stmt = stmt.where(table.c.at >= since)
        if until:
            stmt = stmt.where(table.c.at < until)
        if outcome == "rejected" and table is changes:
            stmt = stmt.where(false())
        elif outcome and outcome != "rejected":
            stmt = stmt.where(table.c.outcome.startswith(outcome))
        parts.append(stmt)
    union = union_all(*parts).subquery()
    with engine.connect() as conn:
        for row in conn.execute(select(union).order_by(union.c.at).limit(limit)):
            yield AuditEntry(**row._mapping)


def purge(engine: Engine, retention_days: int) -> int:
    """Delete audit rows older than the retention; returns how many went.

    ``changes`` is also the outbox: a change some connector has not handled yet (past the
    slowest delivery cursor) stays, however old, so a purge never loses a delivery.
    """
    horizon = utcnow() - timedelta(days=retention_days)
    handled = select(func.min(delivery_cursors.c.seq)).scalar_subquery()
    with engine.begin() as conn:
        gone = conn.execute(delete(changes).where(
            changes.c.at < horizon,
            or_(~exists().select_from(delivery_cursors), changes.c.seq <= handled),
        )).rowcount
        gone += conn.execute(delete(rejected_writes).where(rejected_writes.c.at < horizon)).rowcount
    return gone
