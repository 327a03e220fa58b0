"""The audit log: every write with who made it, from where, and how it ended.

A committed write is its ``changes`` row (the outbox row written in the write's own
transaction), which now also carries the credential's name, the client IP and the outcome.
A write the worker refused (404, 409, 412 …) gets a ``rejected_writes`` row, written after
its transaction rolled back, so it never reaches the outbox. A credential made or revoked
(``scimbus tokens``) gets a ``credential_events`` row in the same transaction, naming the
operator. ``scimbus audit`` reads all three, and tells for each committed write what became
of it at each connector (``deliveries``: delivered when, failing with which error, dead).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterator

from sqlalchemy import BigInteger, Engine, Select, String, delete, false, literal, null, or_, select, union_all

from libs.bus.messages import WriteJob
from libs.security.credentials import utcnow
from libs.store.access import engine_of
from libs.store.deliveries import ChangeOutcome, ResourceKey, change_outcome
from libs.store.directory import DirectoryStore
from libs.store.tables import changes, credential_events, rejected_writes

log = logging.getLogger("scimbus.audit")


def audit_fields(job: WriteJob) -> dict[str, Any]:
    return {"token_name": _clip(job.meta.get("token_name"), 128), "client_ip": _clip(job.meta.get("client_ip"), 64),
            "client_request_id": _clip(job.meta.get("client_request_id"), 128), "outcome": "ok"}


def _clip(value: Any, size: int) -> str | None:
    return str(value)[:size] if value is not None else None



def rejection_row(job: WriteJob, error: dict[str, Any]) -> dict[str, Any]:
    """The ``rejected_writes`` row of a write the worker refused (``error``: its SCIM error body).

    The worker inserts it in its batch's transaction, after the write was rolled back
    (its savepoint, or the transaction when it held nothing else): the refusal is audited exactly when the batch's answers are committed.
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
    change_seq: int | None = None
    """The ``changes`` row of a committed write (what connectors receive); None otherwise."""

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "at": self.at.isoformat()}


_COLUMNS = ("at", "app", "op", "resource_type", "resource_id", "outcome", "token_name", "client_ip", "request_id",
            "job_id")
_NONE = null().cast(String)


def _writes(table) -> Select:
    seq = table.c.seq if table is changes else null().cast(BigInteger)
    return select(*(table.c[c] for c in _COLUMNS), _NONE.label("actor"), _NONE.label("detail"),
                  table.c.client_request_id, seq.label("change_seq"))


def _credential_events() -> Select:
    """Credentials made and revoked, as audit entries: op create/revoke, resource the
    credential's id, token_name its name."""
    e = credential_events
    return select(e.c.at, e.c.app, e.c.action.label("op"), literal("Credential", String).label("resource_type"),
                  e.c.credential_id.label("resource_id"), literal("ok", String).label("outcome"),
                  e.c.name.label("token_name"), _NONE.label("client_ip"), _NONE.label("request_id"),
                  _NONE.label("job_id"), e.c.actor, (e.c.kind + " scopes=" + e.c.scopes).label("detail"),
                  _NONE.label("client_request_id"), null().cast(BigInteger).label("change_seq"))


def query(engine: Engine | DirectoryStore, *, app: str | None = None, resource_id: str | None = None, token_name: str | None = None,
          since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
          request_id: str | None = None, limit: int = 1000) -> Iterator[AuditEntry]:
    """Audit entries, oldest first; ``outcome`` is "ok", "rejected" or a status such as "409";
    ``request_id`` is ours (X-Request-Id of the answer) or the client's own."""
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
        if request_id:
            stmt = stmt.where(or_(columns.request_id == request_id, columns.client_request_id == request_id))
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


def deliveries(engine: Engine | DirectoryStore, entry: AuditEntry, interests: dict[str, tuple[str, frozenset[str]]]
               ) -> list[ChangeOutcome]:
    """Each interested connector's outcome of a committed write (none for a refused write or a
    credential event); ``interests``: ``deliveries.connector_interests(settings)``."""
    if entry.change_seq is None:
        return []
    key = ResourceKey(entry.app, entry.resource_type, entry.resource_id)
    with engine_of(engine).connect() as conn:
        return [change_outcome(conn, name, key, entry.change_seq) for name, (app, kinds) in interests.items()
                if app == entry.app and entry.resource_type in kinds]


def purge(engine: Engine | DirectoryStore, retention_days: int) -> int:
    """Delete audit rows older than the retention; returns how many went.

    ``changes`` is also the outbox: a change some connector has not handled yet (past the
    slowest delivery cursor) stays, however old, so a purge never loses a delivery. Batched
    as the sweeper's retention is (libs/store/retention.py), which also keeps the newest change.
    """
    from libs.store import retention

    horizon = utcnow() - timedelta(days=retention_days)
    gone = 0
    for step in (lambda conn: retention.purge_changes(conn, horizon, None),
                 lambda conn: retention.purge_rejected_writes(conn, horizon),
                 lambda conn: _purge_credential_events(conn, horizon)):
        gone += retention.run_batches(engine_of(engine), step)
    return gone


def _purge_credential_events(conn, horizon: datetime) -> int:
    from libs.store.retention import BATCH

    e = credential_events.c
    keys = list(conn.execute(select(e.seq).where(e.at < horizon).order_by(e.at).limit(BATCH)).scalars())
    if keys:
        conn.execute(delete(credential_events).where(e.seq.in_(keys)))
    return len(keys)
