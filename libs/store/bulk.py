"""Many rows, one INSERT: on PostgreSQL ``INSERT … SELECT * FROM unnest(<one array per column>)``.

Why not SQLAlchemy's "insertmanyvalues" (still used on SQLite, where a statement is no
round trip): it writes a new SQL text for every row count, longer than psycopg's cache of
converted queries, so psycopg re-parses it with a regex on every batch and PostgreSQL plans
it anew; psycopg's own ``executemany`` pipeline polls a socket that is always writable.
The ``unnest`` form has one text per table whatever the row count: psycopg converts it
once and PostgreSQL runs it as a prepared statement. Profiled in the worker, the old forms
cost about a quarter of its CPU on a batch of creates.

The rows travel as one JSON text (``INSERT … SELECT * FROM json_to_recordset(<rows>)``):
orjson writes it in microseconds, where psycopg's array dumpers (the element type found and
the dumper chosen per array and per call) took ~125 µs of the worker's CPU for the seven
arrays of 50 index rows, against ~40 µs for the JSON (client CPU, same rows). Rows JSON
cannot carry exactly (a NUL character, which the server refuses in a JSON text, or a float
that is not finite, which orjson writes as null) take the arrays, in PostgreSQL's binary
format (psycopg's ``%b`` placeholders, so the statement is sent as driver SQL): in the text
format psycopg quotes and escapes every element with regular expressions, and a stored
document is JSON, all quotes: 65 µs a document, against 0.2 µs in binary.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import Connection, Float, Table, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import bindparam

_statements: dict[tuple, str] = {}


def json_carries(text: bytes, numbers: Iterable[float | None]) -> bool:
    """Whether ``text``, orjson's JSON of rows whose floats are ``numbers``, carries them
    exactly: orjson writes NaN and infinities as null, and a NUL character (``\\u0000``),
    which no PostgreSQL text holds, is refused by the server instead of by psycopg. Such
    rows take the arrays."""
    return b"\\u0000" not in text and all(n is None or math.isfinite(n) for n in numbers)


def _json_rows(table: Table, rows: list[dict[str, Any]]) -> str | None:
    """``rows`` as the JSON text ``_json_insert`` reads, or None when it would not carry
    them exactly."""
    text = orjson.dumps(rows)
    floats = [name for name in rows[0] if isinstance(table.c[name].type, Float)]
    return text.decode() if json_carries(text, (row[name] for name in floats for row in rows)) else None


def _json_insert(conn: Connection, table: Table, names: tuple[str, ...], returning: tuple[str, ...],
                 prefix: str = "") -> str:
    key = ("json", table.name, names, returning, prefix)
    text = _statements.get(key)
    if text is None:
        columns = ", ".join(f"{name} {table.c[name].type.compile(dialect=conn.dialect)}" for name in names)
        text = (f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {', '.join(f'r.{n}' for n in names)} "
                f"FROM json_to_recordset(%({prefix}rows)b::json) AS r({columns})")
        if returning:
            text += f" RETURNING {', '.join(returning)}"
        _statements[key] = text
    return text


def _insert_of(conn: Connection, table: Table, rows: list[dict[str, Any]], returning: tuple[str, ...] = (),
               prefix: str = "") -> tuple[str, dict[str, Any]]:
    """PostgreSQL: the statement inserting ``rows`` (each with the same keys) and its parameters."""
    names = tuple(rows[0])
    if (text := _json_rows(table, rows)) is not None:
        return _json_insert(conn, table, names, returning, prefix), {f"{prefix}rows": text}
    return (_unnest_insert(conn, table, names, returning, prefix),
            {f"{prefix}{name}_list": [row[name] for row in rows] for name in names})


def _unnest_insert(conn: Connection, table: Table, names: tuple[str, ...], returning: tuple[str, ...],
                   prefix: str = "") -> str:
    key = (table.name, names, returning, prefix)
    text = _statements.get(key)
    if text is None:
        # psycopg's dialect renders each array parameter with its cast (``%(x)s::TEXT[]``),
        # so a column of NULLs still has a type.
        arrays = [bindparam(f"{prefix}{name}_list", type_=ARRAY(table.c[name].type)) for name in names]
        rows = func.unnest(*arrays).table_valued(*names).render_derived()
        stmt = insert(table).from_select(list(names), select(*[rows.c[name] for name in names]))
        if returning:
            stmt = stmt.returning(*[table.c[name] for name in returning])
        text = re.sub(r"%\((\w+)\)s", r"%(\1)b", str(stmt.compile(dialect=conn.dialect)))
        _statements[key] = text
    return text


def _uniform(rows: list[dict[str, Any]]) -> bool:
    return all(row.keys() == rows[0].keys() for row in rows)


def insert_rows_of_tables(conn: Connection, parts: list[tuple[Table, list[dict[str, Any]]]]) -> None:
    """``insert_rows`` of several tables; on PostgreSQL in one statement (each insert but the
    last a data-modifying CTE): the bookkeeping rows a batch of writes leaves cost one round trip."""
    parts = [(table, rows) for table, rows in parts if rows]
    if len(parts) < 2 or conn.dialect.name != "postgresql" or not all(_uniform(rows) for _t, rows in parts):
        for table, rows in parts:
            insert_rows(conn, table, rows)
        return
    texts, params = [], {}
    for k, (table, rows) in enumerate(parts):
        text, values = _insert_of(conn, table, rows, prefix=f"t{k}_")
        texts.append(text)
        params.update(values)
    ctes = ", ".join(f"t{k} AS ({text})" for k, text in enumerate(texts[:-1]))
    conn.exec_driver_sql(f"WITH {ctes} {texts[-1]}", params)


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]],
                returning: tuple[str, ...] = ()) -> list[Any]:
    """Insert ``rows`` (each with the same keys) in one statement; the ``returning`` columns
    of the new rows, in no particular order (match them by a column you sent)."""
    if not rows:
        return []
    if conn.dialect.name == "postgresql" and _uniform(rows):
        # Driver SQL: no SQLAlchemy bind processing, so the values must be what psycopg
        # dumps to the column types, and orjson writes as the server reads them (str, int,
        # float, bool, aware datetime, None).
        result = conn.exec_driver_sql(*_insert_of(conn, table, rows, returning))
    else:
        stmt = insert(table)
        if returning:  # and SQLAlchemy sends the rows as one multi-VALUES statement
            stmt = stmt.returning(*[table.c[name] for name in returning])
        result = conn.execute(stmt, rows)
    return result.all() if returning else []
