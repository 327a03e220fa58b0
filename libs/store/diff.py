"""A changed document's value index rows written as a diff, on PostgreSQL in one statement.

A PATCH changes one or two attributes of a document of about ten indexed values. Rewriting
the index (delete every row, insert every row) cost two statements and ten rows each way;
the diff deletes the rows whose value changed or went and inserts the new ones, and on
PostgreSQL the resource's UPDATE, that DELETE and that INSERT are one statement (data-
modifying CTEs), so a PATCH of ``name.familyName`` costs one round trip instead of three,
and a PATCH of ``active`` (a column, not an index row) no index row at all.

Only the top-level attributes that differ are flattened (``changed_rows``). Rows are
matched by ``(path, ordinal)``, which ``values.flatten`` gives each leaf once;
were a document ever to flatten to a repeated key, the whole index of the resource is
rewritten as before. The old rows are those ``flatten`` makes of the stored document: the
index of a resource is always written from it (``resource_values`` has no other writer).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection

from libs.scim.schemas import ResourceSchema
from libs.store.bulk import json_carries
from libs.store.values import flatten

_VALUE_COLUMNS = ("path", "ordinal", "str_value", "ci_value", "ci_key", "num_value")
_ARRAY_TYPES = {"path": "varchar[]", "ordinal": "int4[]", "str_value": "text[]", "ci_value": "text[]",
                "ci_key": "varchar[]", "num_value": "float8[]"}
_RESOURCE_COLUMNS = ("version", "last_modified", "name", "name_key", "unique_name_key", "external_id",
                     "display_name", "active", "doc")

Key = tuple[str, int]


def changed_rows(old: dict[str, Any], new: dict[str, Any], schema: ResourceSchema
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The index rows of the top-level attributes that differ between two documents, before
    and after. ``flatten`` makes each top-level attribute's rows on their own, and within an
    object (an extension's, a complex attribute's such as ``name``) each key's on their own:
    only the keys whose values differ are flattened, the others' rows being the same on both
    sides (a PATCH of ``name.familyName`` or of the manager makes one row each way)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for key in {**old, **new}:
        was, now = old.get(key), new.get(key)
        if was is now or was == now:
            continue
        if isinstance(was, dict) and isinstance(now, dict):
            subs = [k for k in {**was, **now} if was.get(k) != now.get(k)]
            was, now = {k: was[k] for k in subs if k in was}, {k: now[k] for k in subs if k in now}
        if key in old:
            before[key] = was
        if key in new:
            after[key] = now
    return flatten(before, schema), flatten(after, schema)


def value_changes(old: list[dict[str, Any]], new: list[dict[str, Any]]
                  ) -> tuple[list[Key] | None, list[dict[str, Any]]]:
    """(keys of the rows to delete, or None for all of them; rows to insert)."""
    before = {(r["path"], r["ordinal"]): r for r in old}
    after = {(r["path"], r["ordinal"]): r for r in new}
    if len(before) != len(old) or len(after) != len(new):
        return None, new
    gone = [k for k, r in before.items() if after.get(k) != r]
    added = [r for k, r in after.items() if before.get(k) != r]
    return gone, added


_statements: dict[tuple[str, bool, bool], str] = {}
# The rows as one JSON text each way, not one array per column: psycopg's array dumper
# (the element type found, the dumper upgraded, per array and per call) cost ~75 us of a
# PATCH's CPU for its eight arrays; orjson makes the two texts in ~2 us, and json (not
# jsonb: parsed once, its numbers handed to float8in as written) gives the server the same
# values — a float as orjson writes it (the shortest text that reads back to it) is read
# back to the same double.
_JSON_COLUMNS = ", ".join(f"{c} {_ARRAY_TYPES[c][:-2]}" for c in _VALUE_COLUMNS)


def _update_sql(gone: str, insert: bool, as_json: bool = True) -> str:
    """``gone``: "some" (the keys given), "all" or "none"; ``insert``: whether rows are added;
    ``as_json``: the rows come as JSON texts (``gone``, ``added``), else as arrays."""
    key = (gone, insert, as_json)
    if key in _statements:
        return _statements[key]
    sets = ", ".join(f"{c} = %({c})b" for c in _RESOURCE_COLUMNS)
    parts = [f"changed AS (UPDATE resources SET {sets} WHERE pk = %(pk_)b::int8)"]
    keys = ("json_to_recordset(%(gone)b::json) AS g(path varchar, ordinal int4)" if as_json else
            "unnest(%(gone_path)b::varchar[], %(gone_ordinal)b::int4[]) AS g(path, ordinal)")
    delete = {
        "some": (f"DELETE FROM resource_values AS v USING {keys} WHERE v.resource_pk = %(pk_)b::int8 "
                 "AND v.path = g.path AND v.ordinal = g.ordinal"),
        "all": "DELETE FROM resource_values WHERE resource_pk = %(pk_)b::int8",
    }.get(gone)
    if insert:
        if delete:
            parts.append(f"gone AS ({delete})")
        if as_json:
            rows = f"json_to_recordset(%(added)b::json) AS a({_JSON_COLUMNS})"
        else:
            rows = "unnest({}) AS a".format(", ".join(f"%({c}_list)b::{_ARRAY_TYPES[c]}" for c in _VALUE_COLUMNS))
        main = (f"INSERT INTO resource_values (resource_pk, {', '.join(_VALUE_COLUMNS)}) "
                f"SELECT %(pk_)b::int8, a.* FROM {rows}")
    elif delete:
        main = delete
    else:
        main = f"UPDATE resources SET {sets} WHERE pk = %(pk_)b::int8"
        parts = []
    sql = f"WITH {', '.join(parts)} {main}" if parts else main
    _statements[key] = sql
    return sql


_TOUCH = "UPDATE resources SET version = %(version)b, last_modified = %(last_modified)b WHERE pk = %(pk_)b::int8"


def touch(conn: Connection, params: dict[str, Any]) -> None:
    """PostgreSQL: the version and lastModified of a resource whose document is unchanged."""
    conn.exec_driver_sql(_TOUCH, {"pk_": params["pk_"], "version": params["version"],
                                  "last_modified": params["last_modified"]})


def update_with_values(conn: Connection, params: dict[str, Any], gone: list[Key] | None,
                       added: list[dict[str, Any]]) -> None:
    """PostgreSQL: the resource row (``params``: ``pk_`` and its new columns) and its index diff,
    in one statement."""
    mode = "all" if gone is None else ("some" if gone else "none")
    values = {c: params[c] for c in _RESOURCE_COLUMNS}
    values["pk_"] = params["pk_"]
    rows = orjson.dumps(added) if added else b"[]"
    as_json = json_carries(rows, (r["num_value"] for r in added))
    if mode == "some":
        if as_json:
            values["gone"] = orjson.dumps([{"path": p, "ordinal": o} for p, o in gone]).decode()  # type: ignore[union-attr]
        else:
            values["gone_path"] = [p for p, _ in gone]  # type: ignore[union-attr]
            values["gone_ordinal"] = [o for _, o in gone]  # type: ignore[union-attr]
    if added:
        if as_json:
            values["added"] = rows.decode()
        else:
            values.update({f"{c}_list": [r[c] for r in added] for c in _VALUE_COLUMNS})
    conn.exec_driver_sql(_update_sql(mode, bool(added), as_json), values)


_RESOURCE_TYPES = {"version": "int4", "last_modified": "timestamptz", "name": "varchar", "name_key": "varchar",
                   "unique_name_key": "varchar", "external_id": "varchar", "display_name": "varchar",
                   "active": "bool", "doc": "text"}
# The updates of a batch, one JSON text each for the rows, the index rows gone and the index
# rows added: one statement (and one plan, prepared once) whatever the batch holds.
_UPDATE_MANY = (
    "WITH u AS (SELECT * FROM json_to_recordset(%(rows)b::json) AS u(pk_ int8, all_gone bool, {columns})), "
    "changed AS (UPDATE resources AS r SET {sets} FROM u WHERE r.pk = u.pk_), "
    "touched AS (UPDATE resources AS r SET version = t.version, last_modified = t.last_modified "
    "FROM json_to_recordset(%(touched)b::json) AS t(pk_ int8, version int4, last_modified timestamptz) "
    "WHERE r.pk = t.pk_), "
    "gone_all AS (DELETE FROM resource_values AS v USING u WHERE u.all_gone AND v.resource_pk = u.pk_), "
    "gone_some AS (DELETE FROM resource_values AS v USING json_to_recordset(%(gone)b::json) "
    "AS g(pk_ int8, path varchar, ordinal int4) WHERE v.resource_pk = g.pk_ AND v.path = g.path "
    "AND v.ordinal = g.ordinal) "
    "INSERT INTO resource_values (resource_pk, {values}) SELECT a.pk_, {selected} "
    "FROM json_to_recordset(%(added)b::json) AS a(pk_ int8, {json_columns})"
).format(columns=", ".join(f"{c} {_RESOURCE_TYPES[c]}" for c in _RESOURCE_COLUMNS),
         sets=", ".join(f"{c} = u.{c}" for c in _RESOURCE_COLUMNS), values=", ".join(_VALUE_COLUMNS),
         selected=", ".join(f"a.{c}" for c in _VALUE_COLUMNS), json_columns=_JSON_COLUMNS)


class Updates:
    """Updates of resources (``update_with_values``'s and ``touch``'s) held back and written
    together, in one statement (``flush``): a batch of five PATCHes costs one round trip for
    its rows and index diffs instead of five, a batch of five member adds one for its groups'
    versions. The holder flushes before any statement of its transaction that reads what
    they change and before a second update of a resource held; an update whose JSON would
    not carry its values exactly (``bulk.json_carries``) is not taken (``hold`` answers False)."""

    def __init__(self) -> None:
        self.pks: set[int] = set()
        self._rows: list[bytes] = []
        self._gone: list[dict[str, Any]] = []
        self._added: list[dict[str, Any]] = []
        self._touched: dict[int, dict[str, Any]] = {}

    def must_flush(self, pk: int, doc_changed: bool) -> bool:
        """Whether an update of ``pk`` must wait for those held: one statement cannot change a
        row twice, but a touch replaces the touch held before it."""
        return pk in self.pks and (doc_changed or pk not in self._touched)

    def touch(self, params: dict[str, Any]) -> None:
        self.pks.add(params["pk_"])
        self._touched[params["pk_"]] = {"pk_": params["pk_"], "version": params["version"],
                                        "last_modified": params["last_modified"]}

    def hold(self, params: dict[str, Any], gone: list[Key] | None, added: list[dict[str, Any]]) -> bool:
        pk = params["pk_"]
        row = orjson.dumps({"pk_": pk, "all_gone": gone is None, **{c: params[c] for c in _RESOURCE_COLUMNS}})
        rows = [{"pk_": pk, **r} for r in added]
        if not json_carries(row + orjson.dumps(rows), (r["num_value"] for r in added)):
            return False
        self.pks.add(pk)
        self._rows.append(row)
        self._gone.extend({"pk_": pk, "path": p, "ordinal": o} for p, o in gone or ())
        self._added.extend(rows)
        return True

    def flush(self, conn: Connection) -> None:
        if not self.pks:
            return
        values = {"rows": (b"[" + b",".join(self._rows) + b"]").decode(), "gone": orjson.dumps(self._gone).decode(),
                  "added": orjson.dumps(self._added).decode(), "touched": orjson.dumps(list(self._touched.values())).decode()}
        self.pks.clear()
        self._rows, self._gone, self._added, self._touched = [], [], [], {}
        conn.exec_driver_sql(_UPDATE_MANY, values)
