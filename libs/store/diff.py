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

from sqlalchemy import Connection

from libs.scim.schemas import ResourceSchema
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
    and after: ``flatten`` turns each top-level attribute (an extension: its whole object)
    into its own rows, so the others' rows are the same on both sides and are not made."""
    keys = [k for k in {**old, **new} if old.get(k) != new.get(k)]
    return (flatten({k: old[k] for k in keys if k in old}, schema),
            flatten({k: new[k] for k in keys if k in new}, schema))


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


_statements: dict[tuple[str, bool], str] = {}


def _update_sql(gone: str, insert: bool) -> str:
    """``gone``: "some" (the keys given), "all" or "none"; ``insert``: whether rows are added."""
    key = (gone, insert)
    if key in _statements:
        return _statements[key]
    sets = ", ".join(f"{c} = %({c})b" for c in _RESOURCE_COLUMNS)
    parts = [f"changed AS (UPDATE resources SET {sets} WHERE pk = %(pk_)b::int8)"]
    delete = {
        "some": ("DELETE FROM resource_values AS v USING unnest(%(gone_path)b::varchar[], %(gone_ordinal)b::int4[]) "
                 "AS g(path, ordinal) WHERE v.resource_pk = %(pk_)b::int8 AND v.path = g.path "
                 "AND v.ordinal = g.ordinal"),
        "all": "DELETE FROM resource_values WHERE resource_pk = %(pk_)b::int8",
    }.get(gone)
    if insert:
        if delete:
            parts.append(f"gone AS ({delete})")
        arrays = ", ".join(f"%({c}_list)b::{_ARRAY_TYPES[c]}" for c in _VALUE_COLUMNS)
        main = (f"INSERT INTO resource_values (resource_pk, {', '.join(_VALUE_COLUMNS)}) "
                f"SELECT %(pk_)b::int8, a.* FROM unnest({arrays}) AS a")
    else:
        main = delete or "SELECT 1"
    sql = f"WITH {', '.join(parts)} {main}"
    _statements[key] = sql
    return sql


def update_with_values(conn: Connection, params: dict[str, Any], gone: list[Key] | None,
                       added: list[dict[str, Any]]) -> None:
    """PostgreSQL: the resource row (``params``: ``pk_`` and its new columns) and its index diff,
    in one statement."""
    mode = "all" if gone is None else ("some" if gone else "none")
    values = {c: params[c] for c in _RESOURCE_COLUMNS}
    values["pk_"] = params["pk_"]
    if mode == "some":
        values["gone_path"] = [p for p, _ in gone]  # type: ignore[union-attr]
        values["gone_ordinal"] = [o for _, o in gone]  # type: ignore[union-attr]
    if added:
        values.update({f"{c}_list": [r[c] for r in added] for c in _VALUE_COLUMNS})
    conn.exec_driver_sql(_update_sql(mode, bool(added)), values)
