"""The directory store: resources, their value index and group membership, in SQL.

Rules every caller relies on:

- Writes happen inside ``transaction()``; on PostgreSQL the row being changed is locked
  (``SELECT … FOR NO KEY UPDATE``, ``FOR UPDATE`` to delete it) and SQLite takes its write
  lock at BEGIN, so two writers of one resource serialise and no update is lost.
- Names are unique case-insensitively where the caller says so (``unique_name``: every
  userName; a group's displayName in an app whose setting is "server"): checked before
  writing and enforced by the unique index on ``unique_name_key``; a race that slips past
  the check surfaces as ``IntegrityError``, which the caller retries (the check then sees
  the winner). ``externalId`` is never unique (RFC 7643 §3.1; Entra's mailNickname repeats
  across a tenant's domains): a filter on it finds every holder.
- Membership changes are set operations on ``group_members``: adding one member costs one
  row, whatever the size of the group; members are never part of the stored document.
- Documents come back as fresh dicts with ``meta`` filled in (no ``location``: the HTTP
  edge knows its own base URL).

SQLAlchemy Core throughout: these statements sit on every request's path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from libs.scim.errors import InvalidValue, ScimError, TooMany, Unavailable, Uniqueness
from libs.scim.filter import Filter
from libs.scim.render import etag, format_datetime
from libs.scim.schemas import GROUPS, USERS, ResourceSchema
from libs.store.bulk import insert_rows, insert_rows_of_tables
from libs.store.diff import Updates, changed_rows, touch, update_with_values, value_changes
from libs.store.prepared import Prepared
from libs.store.query import filter_clause, name_key_of, sort_clause
from libs.store.session import StatementTimeout, read_reconnecting, writer_lock
from libs.store.tables import applied_writes, changes, members, rejected_writes, resource_values, resources
from libs.store.values import flatten

R = resources.c
# Named in member lookups so the (app, resource_type, id) index serves them: without the
# type, PostgreSQL read every resource of the app to find one member (14 ms at 100,000 users).
_MEMBER_TYPES = (USERS.name, GROUPS.name)
_CHUNK = 500

log = logging.getLogger("scimbus.store")


def _timed_out(exc: StatementTimeout, asked: bool) -> ScimError:
    """A read stopped by the statement timeout: ``tooMany`` when the client's filter or sort asked
    for that work (a narrower one will do), else the database is overloaded: 503, retry later."""
    if asked:
        return TooMany("The query ran longer than this server allows (SCIM_QUERY_TIMEOUT): narrow the filter.")
    log.warning("a read ran past the statement timeout: %s", exc)
    return Unavailable("The directory is too busy to answer in time; retry later.")


def _read(engine: Engine, read, *, asked: bool):
    try:
        return read_reconnecting(engine, read)
    except StatementTimeout as exc:
        raise _timed_out(exc, asked) from None


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


@dataclass
class StoredResource:
    """A resource row as the worker edits it: the stored document has no id, meta or members."""

    pk: int
    id: str
    resource_type: str
    version: int
    created: datetime
    last_modified: datetime
    doc: dict[str, Any]
    # Whether the resource is a member of any group, when the row was read with that
    # (``load``): False spares a write's answer its query for the user's groups.
    in_groups: bool | None = None

    def document(self, *, members: list[dict] | None = None, groups: list[dict] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"schemas": self.doc.get("schemas", []), "id": self.id}
        out.update((k, v) for k, v in self.doc.items() if k != "schemas")
        if members is not None:
            out["members"] = members
        if groups is not None:
            out["groups"] = groups
        out["meta"] = {
            "resourceType": self.resource_type,
            "created": format_datetime(self.created),
            "lastModified": format_datetime(self.last_modified),
            "version": etag(self.version),
        }
        return out


def _name_of(schema: ResourceSchema, doc: dict[str, Any]) -> str:
    return doc["userName"] if schema is USERS else doc["displayName"]


def name_key(schema: ResourceSchema, doc: dict[str, Any]) -> str:
    """What the case-insensitive uniqueness of userName / group displayName compares."""
    return _name_of(schema, doc).lower()


def clash(schema: ResourceSchema, doc: dict[str, Any], name_keys: set[str]) -> Uniqueness | None:
    """The 409 of ``doc`` when its name is among those already in use."""
    name = _name_of(schema, doc)
    if name_key(schema, doc) in name_keys:
        return Uniqueness(f"{'userName' if schema is USERS else 'displayName'} {name!r} is already in use.")
    return None


def _unique(schema: ResourceSchema, unique_name: bool | None) -> bool:
    return schema is USERS if unique_name is None else unique_name


INDEXED_LENGTH = 1024
"""Characters the resource row's name, displayName and externalId columns hold
(``tables.resources``): a longer value, which SCIM_MAX_VALUE_LENGTH (2,048 by default) lets
through, is refused as invalid instead of failing its write in the database."""


def _check_indexed_lengths(schema: ResourceSchema, doc: dict[str, Any], name: str) -> None:
    for attribute, value in (("userName" if schema is USERS else "displayName", name.lower()),
                             ("displayName", doc.get("displayName")), ("externalId", doc.get("externalId"))):
        if isinstance(value, str) and len(value) > INDEXED_LENGTH:
            raise InvalidValue(f"{attribute} is longer than {INDEXED_LENGTH} characters.")


def _row_values(schema: ResourceSchema, doc: dict[str, Any], unique_name: bool) -> dict[str, Any]:
    name = _name_of(schema, doc)
    _check_indexed_lengths(schema, doc, name)
    return {
        "name": name,
        "name_key": name.lower(),
        "unique_name_key": name.lower() if unique_name else None,
        "external_id": doc.get("externalId"),
        "display_name": doc.get("displayName"),
        "active": doc.get("active") if schema is USERS else None,
        "doc": orjson.dumps(doc).decode(),
    }


def _stored(row: Any) -> StoredResource:
    return StoredResource(row.pk, row.id, row.resource_type, row.version, _as_utc(row.created),
                          _as_utc(row.last_modified), orjson.loads(row.doc), getattr(row, "in_groups", None))


# Statements on the write path are built once: constructing a SQLAlchemy statement per call
# cost more than executing it (cache-key generation), so callers pass parameters only.
_ROW = ("name", "name_key", "unique_name_key", "external_id", "display_name", "active", "doc")
_SELECT_APPLIED = select(applied_writes.c.job_id, applied_writes.c.result).where(
    applied_writes.c.job_id.in_(bindparam("job_ids", expanding=True)))
# With the row, whether it belongs to any group: most users belong to none, and then a
# write's answer needs no second query for their groups. The answer's groups are those of the
# moment the row was locked: a member add committed while the write runs is after it.
_SELECT_ONE = select(resources, exists().where(members.c.member_pk == R.pk).label("in_groups")).where(
    R.app == bindparam("app"), R.resource_type == bindparam("resource_type"), R.id == bindparam("id"))
# Several rows of one app and type, locked in pk order: two workers locking overlapping sets
# take them in the same order, so they wait for each other instead of deadlocking.
_SELECT_MANY = select(resources, exists().where(members.c.member_pk == R.pk).label("in_groups")).where(
    R.app == bindparam("app"), R.resource_type == bindparam("resource_type"),
    R.id.in_(bindparam("ids", expanding=True))).order_by(R.pk)
# A row to change is locked FOR NO KEY UPDATE, the lock PostgreSQL's own UPDATE takes when it
# keeps the row's keys. It leaves alone the KEY SHARE lock that a member add's foreign key
# check takes on each member's row: locked FOR UPDATE, a batch PATCHing a user that waited
# for a group held by a batch adding that user to it deadlocked (each waited for the other's
# row; PostgreSQL broke it after 1 s and RQ ran the batch again). A row to delete is locked
# FOR UPDATE: a member add of it must wait, then find it gone. A rename (a change of
# ``unique_name_key``) takes FOR UPDATE at its UPDATE.
_LOCKS = {
    (False, False): _SELECT_ONE.with_for_update(key_share=True),
    (False, True): _SELECT_ONE.with_for_update(),
    (True, False): _SELECT_MANY.with_for_update(key_share=True),
    (True, True): _SELECT_MANY.with_for_update(),
}
# Names are compared on name_key, not unique_name_key: a group named while its app allowed
# repeated names still holds that name once the app's setting becomes "server".
_SELECT_CLASH = (
    select(R.name_key)
    .where(R.app == bindparam("app"), R.resource_type == bindparam("resource_type"),
           R.name_key == bindparam("name_key"), R.pk != bindparam("exclude_pk"))
    .limit(1)
)
_SELECT_TAKEN = (
    select(R.name_key).distinct()
    .where(R.app == bindparam("app"), R.resource_type == bindparam("resource_type"),
           R.name_key.in_(bindparam("name_keys", expanding=True)))
)
_UPDATE_RESOURCE = update(resources).where(R.pk == bindparam("pk_")).values(
    version=bindparam("version"), last_modified=bindparam("last_modified"), **{c: bindparam(c) for c in _ROW})
_TOUCH_RESOURCE = update(resources).where(R.pk == bindparam("pk_")).values(
    version=bindparam("version"), last_modified=bindparam("last_modified"))
_DELETE_VALUES = delete(resource_values).where(resource_values.c.resource_pk == bindparam("pk_"))
_DELETE_SOME_VALUES = delete(resource_values).where(resource_values.c.resource_pk == bindparam("pk_"),
                                                   resource_values.c.path == bindparam("path_"),
                                                   resource_values.c.ordinal == bindparam("ordinal_"))
_DELETE_MEMBERSHIPS = delete(members).where(or_(members.c.group_pk == bindparam("pk_"),
                                                members.c.member_pk == bindparam("pk_")))
_DELETE_RESOURCE = delete(resources).where(R.pk == bindparam("pk_"))
# A resource deleted leaves the groups it belonged to: each is a new version (RFC 7644 §3.14),
# or a client holding its ETag would keep the member list from before (304). A group a
# concurrent writer holds is skipped rather than waited for: that writer may be adding this
# very member and waiting for the delete to end (its foreign key), and the groups would
# deadlock with it; it writes the group's next version itself.
_GROUPS_OF_MEMBER = select(members.c.group_pk).where(members.c.member_pk == bindparam("pk_"))
_TOUCH_GROUPS_OF_MEMBER = {
    "postgresql": update(resources).where(R.pk.in_(
        select(R.pk).join(members, members.c.group_pk == R.pk).where(members.c.member_pk == bindparam("pk_"))
        .with_for_update(key_share=True, skip_locked=True, of=resources))).values(
            version=R.version + 1, last_modified=bindparam("last_modified")),
    "sqlite": update(resources).where(R.pk.in_(_GROUPS_OF_MEMBER)).values(
        version=R.version + 1, last_modified=bindparam("last_modified")),
}

# The read side's statements, also built once. ``related`` (see ``_related``) says whether
# a row has any member (a group) or group (a user), so most reads skip that second query.
_m = resources.alias("m")
_SELECT_MEMBERS = (
    select(members.c.group_pk, _m.c.id, _m.c.resource_type, _m.c.name, _m.c.display_name)
    .join(_m, _m.c.pk == members.c.member_pk)
    .where(members.c.group_pk.in_(bindparam("pks", expanding=True)))
    .order_by(members.c.group_pk, _m.c.pk)
)
_g = resources.alias("g")
_SELECT_GROUPS = (
    select(members.c.member_pk, _g.c.id, _g.c.name)
    .join(_g, _g.c.pk == members.c.group_pk)
    .where(members.c.member_pk.in_(bindparam("pks", expanding=True)))
    .order_by(members.c.member_pk, _g.c.pk)
)
_RELATED_COLUMN = {None: None, "members": members.c.group_pk, "groups": members.c.member_pk}
# PostgreSQL: resolve member ids and insert the rows not there yet, in one round trip; each
# id found comes back with whether it was added (ON CONFLICT skips the members already in).
_ADD_MEMBERS = (
    "WITH found AS (SELECT id, pk FROM resources WHERE app = %(app)s "
    f"AND resource_type IN ('{USERS.name}', '{GROUPS.name}') AND id = ANY(%(ids)b::varchar[])), "
    "added AS (INSERT INTO group_members (group_pk, member_pk) SELECT %(group_pk)s::int8, pk FROM found "
    "WHERE pk <> %(group_pk)s::int8 ON CONFLICT DO NOTHING RETURNING member_pk) "
    "SELECT found.id, EXISTS (SELECT 1 FROM added WHERE added.member_pk = found.pk) AS added FROM found"
)


# What a document is made of (``_stored``): fewer columns, less for the driver to describe.
_DOCUMENT_COLUMNS = (R.pk, R.id, R.resource_type, R.version, R.created, R.last_modified, R.doc)


def _rows_select(related: str | None, *, counted: bool = False):
    """The document columns, and ``related``: whether the row has any member/group, or with
    ``counted`` how many (what a page budget of rendered members weighs)."""
    column = _RELATED_COLUMN[related]
    if column is None:
        return select(*_DOCUMENT_COLUMNS)
    if counted:
        return select(*_DOCUMENT_COLUMNS, select(func.count()).where(column == R.pk).scalar_subquery().label("related"))
    return select(*_DOCUMENT_COLUMNS, exists().where(column == R.pk).label("related"))


def _within_budget(rows: list[Any], budget: int) -> list[Any]:
    """The leading rows whose members (or groups) add up to at most ``budget``, and at least one
    row: a single resource renders whole, as its GET by id does (issue 16: a page of 1,000
    large groups rendered every member of each)."""
    total = 0
    for i, row in enumerate(rows):
        total += row.related
        if total > budget and i > 0:
            return rows[:i]
    return rows


def _related(schema: ResourceSchema, with_members: bool, with_groups: bool) -> str | None:
    """Which derived list the documents need: a group's ``members``, a user's ``groups``, or none."""
    if schema.name == GROUPS.name:
        return "members" if with_members else None
    return "groups" if with_groups else None


_BY_ID = {k: Prepared(_rows_select(k).where(R.app == bindparam("app"), R.resource_type == bindparam("resource_type"),
                                            R.id == bindparam("id"))) for k in _RELATED_COLUMN}
_BY_NAME_KEY = {k: Prepared(_rows_select(k).where(R.app == bindparam("app"),
                                                  R.resource_type == bindparam("resource_type"),
                                                  R.name_key == bindparam("name_key")).order_by(R.pk))
                for k in _RELATED_COLUMN}


def _check_members(group: StoredResource, ids: list[str], found, ignore_unknown: bool) -> None:
    """The ids of an add that name no resource (an error, or skipped and logged with
    ``ignore_unknown``), and the group itself among its members (always an error)."""
    missing = [i for i in ids if i not in found]
    if missing and not ignore_unknown:
        raise InvalidValue(f"members: no User or Group with id {missing[0]!r}.")
    if missing:
        log.info("group %s: ignoring %d unknown member id(s), e.g. %r", group.id, len(missing), missing[0])
    if group.id in found:
        raise InvalidValue("members: a group cannot be a member of itself.")


class DirectoryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        """Close the pool's connections (a command that opened the store for one task)."""
        self.engine.dispose()

    # ------------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.write_connection() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A connection for writes, with no transaction begun: the caller begins, commits and
        may roll back and begin again (``unit_of_work``); each begin on SQLite is IMMEDIATE."""
        with writer_lock(self.engine), self.engine.connect() as conn:
            conn.info["write"] = True
            try:
                yield conn
            finally:
                conn.info.pop("write", None)

    def _insert(self, conn: Connection, table):
        dialect = conn.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(table)
        if dialect == "sqlite":
            return sqlite.insert(table)
        return insert(table)

    # ------------------------------------------------------------------ idempotency, audit
    def applied_results(self, conn: Connection, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Recorded results of the writes among ``job_ids`` that were already applied."""
        rows = conn.execute(_SELECT_APPLIED, {"job_ids": job_ids})
        return {r.job_id: orjson.loads(r.result) for r in rows}

    def record(self, conn: Connection, entries: list[dict[str, Any]], rejections: list[dict[str, Any]] = ()) -> None:
        """Idempotency records and change rows of several writes, and the audit rows of the
        writes refused, in at most three statements.

        Each entry: app, job_id, request_id, result (payload), change (dict or None). On
        PostgreSQL the three inserts are one statement.
        """
        now = utcnow()
        insert_rows_of_tables(conn, [
            (rejected_writes, list(rejections)),
            (applied_writes, [{"job_id": e["job_id"], "app": e["app"], "result": orjson.dumps(e["result"]).decode(),
                               "applied_at": now} for e in entries]),
            (changes, [{"app": e["app"], "job_id": e["job_id"], "request_id": e["request_id"], "at": now,
                        **e["change"]} for e in entries if e["change"] is not None]),
        ])

    # ------------------------------------------------------------------ reads inside a write
    def load(self, conn: Connection, app: str, schema: ResourceSchema, id: str, *, lock: bool,
             deleting: bool = False) -> StoredResource | None:
        """The resource, locked for a change (``lock``), or for its deletion (``deleting``)."""
        stmt = _LOCKS[False, deleting] if lock and conn.dialect.name == "postgresql" else _SELECT_ONE
        row = conn.execute(stmt, {"app": app, "resource_type": schema.name, "id": id}).first()
        return _stored(row) if row is not None else None

    def load_many(self, conn: Connection, app: str, schema: ResourceSchema, ids: list[str], *,
                  lock: bool, deleting: bool = False) -> dict[str, StoredResource]:
        """``load`` of several ids in one statement: id → resource, unknown ids absent."""
        stmt = _LOCKS[True, deleting] if lock and conn.dialect.name == "postgresql" else _SELECT_MANY
        return {row.id: _stored(row) for row in conn.execute(stmt, {"app": app, "resource_type": schema.name,
                                                                     "ids": ids})}

    def check_unique(self, conn: Connection, app: str, schema: ResourceSchema, doc: dict[str, Any],
                     exclude_pk: int | None = None) -> None:
        """``Uniqueness`` when another resource of the app holds ``doc``'s name (any case)."""
        row = conn.execute(_SELECT_CLASH, {
            "app": app, "resource_type": schema.name, "name_key": name_key(schema, doc),
            "exclude_pk": -1 if exclude_pk is None else exclude_pk,
        }).first()
        if row is not None:
            raise clash(schema, doc, {row.name_key})  # type: ignore[misc]

    def taken(self, conn: Connection, app: str, schema: ResourceSchema, docs: list[dict[str, Any]]) -> set[str]:
        """The name keys of ``docs`` already in use, in one query: the uniqueness check of a
        batch of creates (``check_unique`` is the one-resource form)."""
        rows = conn.execute(_SELECT_TAKEN, {
            "app": app, "resource_type": schema.name, "name_keys": list({name_key(schema, d) for d in docs}),
        })
        return {r.name_key for r in rows}

    # ------------------------------------------------------------------ writes
    def insert_resource(self, conn: Connection, app: str, schema: ResourceSchema, id: str,
                        doc: dict[str, Any], *, unique_name: bool | None = None) -> StoredResource:
        return self.insert_resources(conn, app, schema, [(id, doc)], unique_name=unique_name)[0]

    def insert_resources(self, conn: Connection, app: str, schema: ResourceSchema,
                         items: list[tuple[str, dict[str, Any]]], *,
                         unique_name: bool | None = None) -> list[StoredResource]:
        """New resources and their value index rows: two statements for any number of them.

        ``unique_name``: whether their names must be unique (default: users' yes, groups' no)."""
        now = utcnow()
        unique = _unique(schema, unique_name)
        pks = dict((r.id, r.pk) for r in insert_rows(conn, resources, [
            {"app": app, "resource_type": schema.name, "id": id, "version": 1, "created": now,
             "last_modified": now, **_row_values(schema, doc, unique)}
            for id, doc in items
        ], returning=("id", "pk")))
        stored = [StoredResource(pks[id], id, schema.name, 1, now, now, doc) for id, doc in items]
        self._insert_values(conn, schema, stored)
        return stored

    def update_resource(self, conn: Connection, schema: ResourceSchema, current: StoredResource,
                        doc: dict[str, Any], *, doc_changed: bool = True,
                        unique_name: bool | None = None, held: Updates | None = None) -> StoredResource:
        """Bump the version (and write the document when it changed); ``unique_name`` as for
        ``insert_resources``. ``held``: on PostgreSQL a changed document may be held there
        and written with others (``Updates.flush``)."""
        now = utcnow()
        params: dict[str, Any] = {"pk_": current.pk, "version": current.version + 1, "last_modified": now}
        # PostgreSQL: statements as text (exec_driver_sql), also when no index row changes (a
        # PATCH of ``active``, a member added): a Core statement, even compiled once, cost
        # SQLAlchemy's cache-key and parameter processing on each call.
        postgresql = conn.dialect.name == "postgresql"
        if not doc_changed:
            if postgresql and held is not None:
                held.touch(params)
            elif postgresql:
                touch(conn, params)
            else:
                conn.execute(_TOUCH_RESOURCE, params)
        else:
            params.update(_row_values(schema, doc, _unique(schema, unique_name)))
            gone, added = value_changes(*changed_rows(current.doc, doc, schema))
            if postgresql:
                if held is None or not held.hold(params, gone, added):
                    update_with_values(conn, params, gone, added)
            else:
                conn.execute(_UPDATE_RESOURCE, params)
                if gone is None:
                    conn.execute(_DELETE_VALUES, {"pk_": current.pk})
                elif gone:
                    conn.execute(_DELETE_SOME_VALUES, [{"pk_": current.pk, "path_": p, "ordinal_": o}
                                                       for p, o in gone])
                insert_rows(conn, resource_values, [{"resource_pk": current.pk, **r} for r in added])
        return StoredResource(current.pk, current.id, current.resource_type, current.version + 1,
                              current.created, now, doc, current.in_groups)

    def delete_resource(self, conn: Connection, current: StoredResource) -> None:
        # Values and memberships (as group or as member) go with it: ON DELETE CASCADE,
        # spelled out as well so a database without enforced foreign keys stays clean.
        conn.execute(_DELETE_VALUES, {"pk_": current.pk})
        conn.execute(_TOUCH_GROUPS_OF_MEMBER[conn.dialect.name], {"pk_": current.pk, "last_modified": utcnow()})
        conn.execute(_DELETE_MEMBERSHIPS, {"pk_": current.pk})
        conn.execute(_DELETE_RESOURCE, {"pk_": current.pk})

    def _insert_values(self, conn: Connection, schema: ResourceSchema, stored: list[StoredResource]) -> None:
        insert_rows(conn, resource_values, [{"resource_pk": s.pk, **r} for s in stored for r in flatten(s.doc, schema)])

    # ------------------------------------------------------------------ membership
    def resolve_members(self, conn: Connection, app: str, values: Iterable[str]) -> dict[str, tuple[int, str]]:
        """Member ids → (pk, resource type), one query per 500 ids; unknown ids are absent."""
        ids = list(dict.fromkeys(values))
        found: dict[str, tuple[int, str]] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start:start + _CHUNK]
            rows = conn.execute(select(R.id, R.pk, R.resource_type).where(
                R.app == app, R.resource_type.in_(_MEMBER_TYPES), R.id.in_(chunk)))
            found.update((r.id, (r.pk, r.resource_type)) for r in rows)
        return found

    def add_members(self, conn: Connection, app: str, group: StoredResource, ids: list[str], *,
                    ignore_unknown: bool = False) -> int:
        """Add members by id; an id naming no resource is ``InvalidValue``, or skipped with
        ``ignore_unknown`` (``SCIM_UNKNOWN_MEMBERS=ignore``)."""
        if not ids:
            return 0
        if conn.dialect.name == "postgresql" and len(ids) <= _CHUNK:
            return self._add_members_in_one(conn, app, group, ids, ignore_unknown)
        found = self.resolve_members(conn, app, ids)
        _check_members(group, ids, found, ignore_unknown)
        rows = [{"group_pk": group.pk, "member_pk": pk} for pk, _ in found.values()]
        added = 0
        for start in range(0, len(rows), _CHUNK):
            stmt = self._insert(conn, members).on_conflict_do_nothing().returning(members.c.member_pk)
            added += len(conn.execute(stmt, rows[start:start + _CHUNK]).all())  # the rows not there before
        return added

    def _add_members_in_one(self, conn: Connection, app: str, group: StoredResource, ids: list[str],
                            ignore_unknown: bool) -> int:
        """``add_members`` for up to 500 ids on PostgreSQL: the lookup of the ids and the insert
        of the rows in one statement (Entra adds one member per PATCH). The checks come after:
        their error rolls the write back, as every error of a write does (its savepoint)."""
        rows = conn.exec_driver_sql(_ADD_MEMBERS, {"app": app, "ids": list(dict.fromkeys(ids)),
                                                   "group_pk": group.pk}).all()
        found = {r.id for r in rows}
        _check_members(group, ids, found, ignore_unknown)
        return sum(1 for r in rows if r.added)

    def remove_members(self, conn: Connection, app: str, group: StoredResource, ids: Iterable[str] | None) -> int:
        """Remove the given member ids, or every member when ``ids`` is None."""
        if ids is None:
            return conn.execute(delete(members).where(members.c.group_pk == group.pk)).rowcount or 0
        ids = list(ids)
        removed = 0
        for start in range(0, len(ids), _CHUNK):
            sub = select(R.pk).where(R.app == app, R.resource_type.in_(_MEMBER_TYPES),
                                     R.id.in_(ids[start:start + _CHUNK]))
            removed += conn.execute(
                delete(members).where(members.c.group_pk == group.pk, members.c.member_pk.in_(sub))
            ).rowcount or 0
        return removed

    def members_of(self, conn: Connection, group_pks: list[int]) -> dict[int, list[dict[str, Any]]]:
        """Member lists of several groups in one query: {group pk: [{value, display, type}]}."""
        out: dict[int, list[dict[str, Any]]] = {pk: [] for pk in group_pks}
        if not group_pks:
            return out
        for r in conn.execute(_SELECT_MEMBERS, {"pks": group_pks}):
            out[r.group_pk].append({"value": r.id, "display": r.display_name or r.name, "type": r.resource_type})
        return out

    def groups_of(self, conn: Connection, member_pks: list[int]) -> dict[int, list[dict[str, Any]]]:
        """Direct groups of several resources in one query: {member pk: [{value, display, type}]}."""
        out: dict[int, list[dict[str, Any]]] = {pk: [] for pk in member_pks}
        if not member_pks:
            return out
        for r in conn.execute(_SELECT_GROUPS, {"pks": member_pks}):
            out[r.member_pk].append({"value": r.id, "display": r.name, "type": "direct"})
        return out

    # ------------------------------------------------------------------ the read side
    def _documents(self, conn: Connection, schema: ResourceSchema, rows: list[Any],
                   with_members: bool, with_groups: bool) -> list[dict[str, Any]]:
        """Documents of ``rows``; a row from ``_rows_select`` with a derived list carries ``related``,
        and rows without any member/group skip that query."""
        stored = [_stored(r) for r in rows]
        is_group = schema.name == GROUPS.name
        if not (with_members if is_group else with_groups):
            return [s.document() for s in stored]
        pks = [s.pk for s, r in zip(stored, rows) if getattr(r, "related", True)]
        if is_group:
            member_map = self.members_of(conn, pks) if pks else {}
            return [s.document(members=member_map.get(s.pk, [])) for s in stored]
        group_map = self.groups_of(conn, pks) if pks else {}
        return [s.document(groups=group_map.get(s.pk) or None) for s in stored]

    def get(self, app: str, schema: ResourceSchema, id: str, *, with_members: bool = True,
            with_groups: bool = True) -> dict[str, Any] | None:
        stmt = _BY_ID[_related(schema, with_members, with_groups)]

        def read(conn: Connection) -> dict[str, Any] | None:
            rows = stmt.rows(conn, {"app": app, "resource_type": schema.name, "id": id})
            row = rows[0] if rows else None
            return None if row is None else self._documents(conn, schema, [row], with_members, with_groups)[0]

        return _read(self.engine, read, asked=False)

    def search(self, app: str, schema: ResourceSchema, node: Filter | None, *, start_index: int = 1,
               count: int = 100, sort_by: str | None = None, descending: bool = False,
               with_members: bool = True, with_groups: bool = True,
               max_related: int | None = None) -> tuple[int, list[dict[str, Any]]]:
        """A page of the resources ``node`` matches and their total. ``max_related`` bounds the
        members (groups' pages) or groups (users' pages) the page renders: it then holds fewer
        than ``count`` resources when they would pass it (RFC 7644 §3.4.2.4 allows fewer)."""
        related = _related(schema, with_members, with_groups)
        counted = related is not None and max_related is not None
        key = name_key_of(node, schema) if node is not None and not sort_by else None
        if key is not None:
            # Entra's ``userName eq "…"`` (and a group's ``displayName eq``): one index probe,
            # through one statement built at import; paging is then a slice of those rows.
            def by_name(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
                rows = _BY_NAME_KEY[related].rows(conn, {"app": app, "resource_type": schema.name, "name_key": key})
                page = rows[start_index - 1:start_index - 1 + count]
                return len(rows), self._documents(conn, schema, page, with_members, with_groups)

            return _read(self.engine, by_name, asked=False)
        where = [R.app == app, R.resource_type == schema.name]
        if node is not None:
            where.append(filter_clause(node, schema))
        cond = and_(*where)
        order = sort_clause(sort_by, descending, schema) if sort_by else [R.pk]

        def read(conn: Connection) -> tuple[int, list[dict[str, Any]]]:
            rows: list[Any] = []
            if count > 0:
                rows = conn.execute(_rows_select(related, counted=counted).where(cond).order_by(*order)
                                    .offset(start_index - 1).limit(count)).all()
            if start_index == 1 and len(rows) < count:
                total = len(rows)  # a first page that is not full holds every match: no COUNT needed
            else:
                total = conn.execute(select(func.count()).select_from(resources).where(cond)).scalar_one()
            if counted:
                rows = _within_budget(rows, max_related)  # type: ignore[arg-type]
            return total, self._documents(conn, schema, rows, with_members, with_groups)

        return _read(self.engine, read, asked=node is not None or bool(sort_by))

    def search_after(self, app: str, schema: ResourceSchema, node: Filter | None, *, after_pk: int, count: int,
                     with_members: bool = True, with_groups: bool = True, max_related: int | None = None
                     ) -> tuple[int, list[dict[str, Any]], int | None]:
        """A keyset page for cursor paging (RFC 9865): up to ``count`` resources after ``after_pk``
        in key order (fewer when ``max_related`` stops it, as in ``search``), the total, and the
        key to continue after (None on the last page)."""
        where = [R.app == app, R.resource_type == schema.name]
        if node is not None:
            where.append(filter_clause(node, schema))
        related = _related(schema, with_members, with_groups)
        counted = related is not None and max_related is not None
        page = _rows_select(related, counted=counted)

        def read(conn: Connection) -> tuple[int, list[dict[str, Any]], int | None]:
            total = conn.execute(select(func.count()).select_from(resources).where(and_(*where))).scalar_one()
            rows = conn.execute(page.where(and_(*where, R.pk > after_pk)).order_by(R.pk).limit(count + 1)).all()
            more = len(rows) > count
            rows = rows[:count]
            if counted:
                kept = _within_budget(rows, max_related)  # type: ignore[arg-type]
                more, rows = more or len(kept) < len(rows), kept
            next_pk = rows[-1].pk if more and rows else None
            return total, self._documents(conn, schema, rows, with_members, with_groups), next_pk

        return _read(self.engine, read, asked=node is not None)
