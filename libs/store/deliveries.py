"""The delivery ledger: what each connector has received, what failed, what is dead.

All state of downstream delivery lives next to the directory, in the same database, so a
change and the fact that it still has to be delivered are committed together (the
``changes`` outbox row) and the ledger can always be compared with the outbox:

- a change ``seq`` of a resource is *handled* for a connector once ``delivered_seq`` or
  ``dead_seq`` of that connector's row for the resource reaches it;
- ``pending`` lists the resources with unhandled changes (the sweeper's work list);
- callers serialise writes of one (connector, resource) row (the delivery job holds a
  Redis lock), so plain read-then-write is enough and stays dialect-neutral.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, update

from libs.store.tables import changes, dead_letters, delivery_cursors, delivery_log, delivery_state

S = delivery_state.c
C = changes.c


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


@dataclass(frozen=True)
class ResourceKey:
    app: str
    resource_type: str
    resource_id: str

    def where(self, connector: str):
        return and_(S.connector == connector, S.app == self.app, S.resource_type == self.resource_type,
                    S.resource_id == self.resource_id)


@dataclass
class State:
    delivered_seq: int = 0
    delivered_version: int = 0
    present: bool = False
    """The target holds the resource, or may: set before a first attempt goes out."""
    remote_id: str | None = None
    dead_seq: int = 0
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    exists: bool = False

    def handled(self, seq: int) -> bool:
        return seq <= max(self.delivered_seq, self.dead_seq)


def latest_change(conn: Connection, key: ResourceKey) -> tuple[int, int] | None:
    """(seq, version) of the newest change of a resource."""
    row = conn.execute(
        select(C.seq, C.version).where(C.app == key.app, C.resource_type == key.resource_type,
                                       C.resource_id == key.resource_id).order_by(C.seq.desc()).limit(1)
    ).first()
    return (row.seq, row.version) if row is not None else None


def load_state(conn: Connection, connector: str, key: ResourceKey) -> State:
    row = conn.execute(select(delivery_state).where(key.where(connector))).first()
    if row is None:
        return State()
    return State(row.delivered_seq, row.delivered_version, row.present, row.remote_id, row.dead_seq, row.attempts,
                 row.last_error, as_utc(row.next_attempt_at), True)


def save_state(conn: Connection, connector: str, key: ResourceKey, state: State) -> None:
    values = {
        "delivered_seq": state.delivered_seq, "delivered_version": state.delivered_version,
        "present": state.present, "remote_id": state.remote_id, "dead_seq": state.dead_seq,
        "attempts": state.attempts, "last_error": state.last_error, "next_attempt_at": state.next_attempt_at,
        "updated_at": utcnow(),
    }
    if state.exists:
        conn.execute(update(delivery_state).where(key.where(connector)).values(**values))
    else:
        conn.execute(insert(delivery_state).values(connector=connector, app=key.app, resource_type=key.resource_type,
                                                   resource_id=key.resource_id, **values))
        state.exists = True


def add_dead_letter(conn: Connection, connector: str, key: ResourceKey, seq: int, version: int, reason: str,
                    attempts: int) -> None:
    conn.execute(insert(dead_letters).values(
        connector=connector, app=key.app, resource_type=key.resource_type, resource_id=key.resource_id, seq=seq,
        version=version, reason=reason[:4000], attempts=attempts, at=utcnow()))


def _cursor(conn: Connection, connector: str) -> int:
    return conn.execute(select(delivery_cursors.c.seq).where(delivery_cursors.c.connector == connector)
                        ).scalar() or 0


def _unhandled(connector: str, app: str, types: tuple[str, ...], cursor: int):
    joined = changes.outerjoin(delivery_state, and_(
        S.connector == connector, S.app == C.app, S.resource_type == C.resource_type,
        S.resource_id == C.resource_id))
    cond = and_(C.seq > cursor, C.app == app, C.resource_type.in_(types),
                or_(S.connector.is_(None), and_(C.seq > S.delivered_seq, C.seq > S.dead_seq)))
    return joined, cond


@dataclass
class Pending:
    key: ResourceKey
    seq: int
    since: datetime
    next_attempt_at: datetime | None


def pending(conn: Connection, connector: str, app: str, types: tuple[str, ...], *, limit: int = 1000
            ) -> list[Pending]:
    """Resources with changes this connector has not handled, oldest first."""
    joined, cond = _unhandled(connector, app, types, _cursor(conn, connector))
    rows = conn.execute(
        select(C.app, C.resource_type, C.resource_id, func.max(C.seq).label("seq"), func.min(C.at).label("since"),
               func.max(S.next_attempt_at).label("next_at"))
        .select_from(joined).where(cond)
        .group_by(C.app, C.resource_type, C.resource_id)
        .order_by(func.min(C.seq)).limit(limit)
    )
    return [Pending(ResourceKey(r.app, r.resource_type, r.resource_id), r.seq, as_utc(r.since), as_utc(r.next_at))
            for r in rows]


SETTLE = timedelta(seconds=30)
"""How long after its ``at`` a change may still commit. A write takes milliseconds from its
changes row to its commit; this covers a stalled commit, and costs the sweeper a scan of
the changes of the last ``SETTLE`` each round."""


def advance_cursor(conn: Connection, connector: str, app: str, types: tuple[str, ...], *,
                   settle: timedelta = SETTLE) -> int:
    """Move the connector's cursor to just before its oldest unhandled change, and not past the
    changes of the last ``settle``: on PostgreSQL a seq is taken at insert but seen at commit,
    so a write still committing may hold a seq below one already seen. Passed by the cursor,
    its change would never be swept: lost if its own delivery failed."""
    cursor = _cursor(conn, connector)
    joined, cond = _unhandled(connector, app, types, cursor)
    oldest = conn.execute(select(func.min(C.seq)).select_from(joined).where(cond)).scalar()
    target = (oldest - 1) if oldest is not None else (conn.execute(select(func.max(C.seq))).scalar() or 0)
    settled = conn.execute(select(C.seq).where(C.at <= utcnow() - settle).order_by(C.at.desc()).limit(1)).scalar()
    target = min(target, settled or 0)
    if target > cursor:
        _set_cursor(conn, connector, target)
    return max(target, cursor)


def rewind_cursor(conn: Connection, connector: str, seq: int) -> None:
    if _cursor(conn, connector) > seq:
        _set_cursor(conn, connector, seq)


def _set_cursor(conn: Connection, connector: str, seq: int) -> None:
    done = conn.execute(update(delivery_cursors).where(delivery_cursors.c.connector == connector).values(seq=seq))
    if not done.rowcount:
        conn.execute(insert(delivery_cursors).values(connector=connector, seq=seq))


def oldest_pending_at(conn: Connection, connector: str, app: str, types: tuple[str, ...]) -> datetime | None:
    joined, cond = _unhandled(connector, app, types, _cursor(conn, connector))
    return as_utc(conn.execute(select(func.min(C.at)).select_from(joined).where(cond)).scalar())


def failing(conn: Connection, connector: str) -> list[dict[str, Any]]:
    """Resources whose last attempt failed and will be retried."""
    rows = conn.execute(select(delivery_state).where(S.connector == connector, S.attempts > 0)
                        .order_by(S.updated_at))
    return [dict(r._mapping) for r in rows]


def dead(conn: Connection, connector: str | None = None, *, include_retried: bool = False) -> list[dict[str, Any]]:
    stmt = select(dead_letters).order_by(dead_letters.c.pk)
    if connector:
        stmt = stmt.where(dead_letters.c.connector == connector)
    if not include_retried:
        stmt = stmt.where(dead_letters.c.retried_at.is_(None))
    return [dict(r._mapping) for r in conn.execute(stmt)]


def dead_count(conn: Connection, connector: str) -> int:
    return conn.execute(select(func.count()).select_from(dead_letters).where(
        dead_letters.c.connector == connector, dead_letters.c.retried_at.is_(None))).scalar_one()


def release_dead(conn: Connection, connector: str, pks: list[int] | None) -> list[ResourceKey]:
    """Mark dead letters retried and make their resources pending again; returns them."""
    stmt = select(dead_letters).where(dead_letters.c.connector == connector, dead_letters.c.retried_at.is_(None))
    if pks is not None:
        stmt = stmt.where(dead_letters.c.pk.in_(pks))
    rows = conn.execute(stmt).all()
    keys: dict[ResourceKey, int] = {}
    for r in rows:
        key = ResourceKey(r.app, r.resource_type, r.resource_id)
        keys[key] = min(keys.get(key, r.seq), r.seq)
    now = utcnow()
    for key, seq in keys.items():
        conn.execute(update(delivery_state).where(key.where(connector)).values(
            dead_seq=0, attempts=0, last_error=None, next_attempt_at=None, updated_at=now))
        rewind_cursor(conn, connector, seq - 1)
    if rows:
        conn.execute(update(dead_letters).where(dead_letters.c.pk.in_([r.pk for r in rows])).values(retried_at=now))
    return list(keys)


def states(conn: Connection, connector: str, app: str, resource_type: str) -> dict[str, State]:
    rows = conn.execute(select(delivery_state).where(S.connector == connector, S.app == app,
                                                     S.resource_type == resource_type))
    return {r.resource_id: State(r.delivered_seq, r.delivered_version, r.present, r.remote_id, r.dead_seq,
                                 r.attempts, r.last_error, as_utc(r.next_attempt_at), True) for r in rows}


def due(next_attempt_at: datetime | None, now: datetime) -> bool:
    return next_attempt_at is None or next_attempt_at <= now


def grace_cutoff(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)


# ------------------------------------------------------------------ issue 18: per change, per connector
def log_delivery(conn: Connection, connector: str, key: ResourceKey, seq: int, outcome: str) -> None:
    """Record that ``connector``'s target now holds ``key`` as of change ``seq`` (in the
    transaction that saves the state)."""
    conn.execute(insert(delivery_log).values(connector=connector, app=key.app, resource_type=key.resource_type,
                                             resource_id=key.resource_id, seq=seq, outcome=outcome, at=utcnow()))


def connector_interests(settings: Any) -> dict[str, tuple[str, frozenset[str]]]:
    """connector → (app, resource types it receives), from the config file, without building clients."""
    out = {}
    for name, spec in (settings.file.get("connectors") or {}).items():
        if spec.get("enabled", True):
            kinds = frozenset(k for k, table in (("User", "users"), ("Group", "groups")) if table in spec)
            out[name] = (spec.get("app", settings.default_app), kinds)
    return out


@dataclass(frozen=True)
class ChangeOutcome:
    """What became of one change at one connector."""

    connector: str
    status: str
    """"delivered", "removed", "skipped" (out of the connector's scope), "failing",
    "dead-lettered" or "pending"."""
    at: datetime | None = None
    """When it was delivered (or dead-lettered); None when not (or no longer) recorded."""
    detail: str | None = None
    """The last error of a failing delivery, the reason of a dead letter."""
    attempts: int | None = None
    next_attempt_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"connector": self.connector, "status": self.status,
                "at": self.at.isoformat() if self.at else None, "detail": self.detail, "attempts": self.attempts,
                "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None}


def change_outcome(conn: Connection, connector: str, key: ResourceKey, seq: int) -> ChangeOutcome:
    """The outcome of change ``seq`` of ``key`` at ``connector``.

    A delivery sends a resource's newest state, so it covers every change up to the seq it
    delivered: a change is delivered by the first logged delivery at or past it.
    """
    L = delivery_log.c
    done = conn.execute(select(L.outcome, L.at).where(
        L.app == key.app, L.resource_type == key.resource_type, L.resource_id == key.resource_id,
        L.connector == connector, L.seq >= seq).order_by(L.seq, L.pk).limit(1)).first()
    if done is not None:
        return ChangeOutcome(connector, done.outcome, as_utc(done.at))
    state = load_state(conn, connector, key)
    if state.delivered_seq >= seq:  # delivered before the log existed, or its row was purged
        return ChangeOutcome(connector, "delivered")
    D = dead_letters.c
    dead = conn.execute(select(D.reason, D.at, D.attempts).where(
        D.connector == connector, D.app == key.app, D.resource_type == key.resource_type,
        D.resource_id == key.resource_id, D.seq >= seq, D.retried_at.is_(None)).order_by(D.seq).limit(1)).first()
    if dead is not None:
        return ChangeOutcome(connector, "dead-lettered", as_utc(dead.at), dead.reason, dead.attempts)
    if state.attempts:
        return ChangeOutcome(connector, "failing", None, state.last_error, state.attempts, state.next_attempt_at)
    return ChangeOutcome(connector, "pending")
