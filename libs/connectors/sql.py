"""``sql``: users, groups and memberships into the tables of an existing application database.

SQLAlchemy Core with reflected tables, so one code path serves PostgreSQL, MariaDB/MySQL
and SQLite: the application owns its schema, we only map columns onto it::

    [connectors.appdb]
    type = "sql"
    url = "mysql://app:secret@db/app"          # mysql:// and mariadb:// use PyMySQL
    [connectors.appdb.users]
    table = "users"
    key = "scim_id"                            # the column that holds our id (mapped below)
    on_delete = "disable"                      # or "delete"
    disable = { column = "enabled", value = false }
    columns = { scim_id = "id", login = { path = "userName", transform = "lowercase" } }
    [connectors.appdb.groups]
    table = "groups"
    key = "scim_id"
    columns = { scim_id = "id", name = "displayName" }
    [connectors.appdb.memberships]
    table = "group_members"
    group = "group_id"                         # holds the group's key
    member = "user_id"                         # holds the user's key

Writes are upserts by key (select, then update or insert, in one transaction), so the
same state applied twice leaves one row. A group's members are a set: rows to add and rows
to remove are computed against the memberships table, never rewritten wholesale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Engine, MetaData, Table, create_engine, delete, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, NoSuchTableError, OperationalError, SQLAlchemyError

from libs.connectors.base import Connector, Lookup, Previous
from libs.connectors.errors import Rejected, Unavailable

_KIND_SECTION = {"User": "users", "Group": "groups"}


def normalise(value: Any) -> Any:
    """One spelling per value, so a target read back compares equal to what was rendered."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, list):
        return sorted(str(v) for v in value)
    return str(value)


def engine_for(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
    elif parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # A failed statement's text names the statement, never the values bound to it: those
    # are the provisioned users' attributes (issue 16), and the error lands in logs and audit.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=2, max_overflow=2, pool_recycle=1800)
        kwargs["connect_args"] = {"connect_timeout": 5}
    return create_engine(parsed, **kwargs)


@dataclass
class SqlConnector(Connector):
    kind_name = "sql"
    _engine: Engine | None = field(default=None, init=False, repr=False)
    _tables: dict[str, Table] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_config(cls, **common) -> SqlConnector:
        options = common["options"]
        if not options.get("url"):
            raise ValueError("url is required")
        for kind, mapping in common["mappings"].items():
            for required in ("table", "key"):
                if required not in mapping.options:
                    raise ValueError(f"{_KIND_SECTION[kind]}.{required} is required")
            key = mapping.fields.get(mapping.options["key"])
            if key is None or (key.path or "").lower() != "id" or key.ref is not None:
                # Rows are found by their key alone: one that changed (a userName) would leave the row
                # under the old key, and a deletion sent by a key whose change was never confirmed miss it.
                raise ValueError(f"{_KIND_SECTION[kind]}: the key column must be mapped from id")
            if mapping.options.get("on_delete", "delete") not in ("delete", "disable"):
                raise ValueError(f"{_KIND_SECTION[kind]}.on_delete is delete or disable")
            if mapping.options.get("on_delete") == "disable" and "column" not in (mapping.options.get("disable") or {}):
                raise ValueError(f"{_KIND_SECTION[kind]}: on_delete = disable needs disable.column")
        return cls(**common)

    # ------------------------------------------------------------------ plumbing
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = engine_for(self.options["url"])
        return self._engine

    def table(self, name: str) -> Table:
        if name not in self._tables:
            with self._errors():
                self._tables[name] = Table(name, MetaData(), autoload_with=self.engine)
        return self._tables[name]

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except NoSuchTableError as exc:
            raise Rejected(f"table {exc} does not exist in the target database") from exc
        except IntegrityError as exc:
            raise Rejected(f"the target database refused the row: {exc.orig}") from exc
        except OperationalError as exc:
            # Connection refused, server gone, deadlock, lock wait timeout: all worth a retry.
            raise Unavailable(f"target database unavailable: {exc.orig}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable(f"target database connection lost: {exc.orig}") from exc
            raise Rejected(f"the target database refused the statement: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise Unavailable(f"target database error: {exc}") from exc

    def _opts(self, kind: str) -> dict[str, Any]:
        return self.mappings[kind].options

    # ------------------------------------------------------------------ contract
    def render(self, resource_type: str, doc: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        fields = super().render(resource_type, doc, lookup)
        if resource_type == "Group" and "memberships" in self.options and "User" in self.mappings:
            ids = [m["value"] for m in doc.get("members") or [] if m.get("type", "User") == "User"]
            users = lookup("User", ids)
            keys = []
            for member_id in ids:
                user = users.get(member_id)
                if user is not None and self.scope.includes("User", user):
                    keys.append(self.mappings["User"].render(user, lookup)[self._opts("User")["key"]])
            fields["members"] = sorted(str(k) for k in keys)
        return fields

    def key(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> str:
        return str(fields[self._opts(resource_type)["key"]])

    def apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any], previous: Previous,
              lookup: Lookup) -> str:
        opts = self._opts(resource_type)
        key = self.key(resource_type, doc, fields)
        columns = {k: v for k, v in fields.items() if k != "members"}
        with self._errors():
            table = self.table(opts["table"])
            with self.engine.begin() as conn:
                kc = table.c[opts["key"]]
                exists = conn.execute(select(kc).where(kc == key)).first() is not None
                if exists:
                    conn.execute(update(table).where(kc == key).values(**columns))
                else:
                    conn.execute(insert(table).values(**columns))
                if "members" in fields:
                    self._sync_members(conn, key, fields["members"])
        return key

    def _sync_members(self, conn, group_key: str, wanted: list[str]) -> None:
        spec = self.options["memberships"]
        table = self.table(spec["table"])
        gc, mc = table.c[spec["group"]], table.c[spec["member"]]
        have = {str(r[0]) for r in conn.execute(select(mc).where(gc == group_key))}
        want = set(wanted)
        if have - want:
            conn.execute(delete(table).where(gc == group_key, mc.in_(sorted(have - want))))
        if want - have:
            conn.execute(insert(table), [{spec["group"]: group_key, spec["member"]: m} for m in sorted(want - have)])

    def remove(self, resource_type: str, resource_id: str, previous: Previous) -> None:
        if previous.remote_id is not None:
            self.remove_key(resource_type, previous.remote_id)

    def remove_key(self, resource_type: str, key: str) -> None:
        opts = self._opts(resource_type)
        with self._errors():
            table = self.table(opts["table"])
            with self.engine.begin() as conn:
                kc = table.c[opts["key"]]
                if opts.get("on_delete", "delete") == "disable":
                    disable = opts["disable"]
                    conn.execute(update(table).where(kc == key).values({disable["column"]: disable.get("value", False)}))
                    return
                if "memberships" in self.options:
                    spec = self.options["memberships"]
                    mt = self.table(spec["table"])
                    column = spec["member"] if resource_type == "User" else spec["group"]
                    conn.execute(delete(mt).where(mt.c[column] == key))
                conn.execute(delete(table).where(kc == key))

    def read(self, resource_type: str) -> dict[str, dict[str, Any]]:
        opts = self._opts(resource_type)
        names = list(self.mappings[resource_type].fields)
        if opts.get("on_delete") == "disable" and opts["disable"]["column"] not in names:
            names.append(opts["disable"]["column"])
        out: dict[str, dict[str, Any]] = {}
        with self._errors():
            table = self.table(opts["table"])
            with self.engine.connect() as conn:
                for row in conn.execute(select(*(table.c[n] for n in names))):
                    out[str(row._mapping[opts["key"]])] = {n: row._mapping[n] for n in names}
                if resource_type == "Group" and "memberships" in self.options and "User" in self.mappings:
                    spec = self.options["memberships"]
                    mt = self.table(spec["table"])
                    for entry in out.values():
                        entry["members"] = []
                    for g, m in conn.execute(select(mt.c[spec["group"]], mt.c[spec["member"]])):
                        if str(g) in out:
                            out[str(g)]["members"].append(str(m))
        return out

    def owner(self, resource_type: str, key: str, fields: dict[str, Any]) -> str | None:
        return key  # the key column holds our id (from_config requires it)

    def is_removed(self, resource_type: str, fields: dict[str, Any]) -> bool:
        opts = self._opts(resource_type)
        if opts.get("on_delete") != "disable":
            return False
        disable = opts["disable"]
        return normalise(fields.get(disable["column"])) == normalise(disable.get("value", False))

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
