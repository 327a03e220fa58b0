"""A Core ``select`` compiled once and run straight on the driver's cursor: the reader's
two hot statements (a read by id, Entra's ``userName eq``).

Why not ``Connection.execute``: SQLAlchemy's execution context and result object cost
~65 µs of the ~160 µs a one-row read takes on PostgreSQL (compiled-cache lookup, execution
context, cursor description, result metadata, row processors), about a tenth of the
reader's CPU per GET. The statement stays SQLAlchemy Core, compiled for the engine's
dialect, and psycopg prepares it server-side after a few uses, as it would any other.

Only for PostgreSQL: its driver returns what the columns hold (datetimes, text), whereas
SQLite's needs SQLAlchemy's result processors; there ``rows`` falls back to ``execute``.
Errors keep SQLAlchemy's handling: when the driver raises, the statement runs once more
through ``Connection.execute`` on the same connection, which reports a dead connection as
``connection_invalidated`` (and refreshes the pool) exactly as before.
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any

from sqlalchemy import Connection, Select


class Prepared:
    def __init__(self, stmt: Select) -> None:
        self.stmt = stmt
        self.row = namedtuple("Row", [c.name for c in stmt.selected_columns])  # type: ignore[misc]
        self._sql: str | None = None  # compiled for the first PostgreSQL engine: the project's one driver

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        dialect = conn.dialect
        if dialect.name != "postgresql":
            return conn.execute(self.stmt, params).all()
        sql = self._sql
        if sql is None:
            sql = self._sql = str(self.stmt.compile(dialect=dialect))
        make = self.row._make
        try:
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(sql, params)
                return [make(r) for r in cursor.fetchall()]
            finally:
                cursor.close()
        except dialect.loaded_dbapi.Error:
            return conn.execute(self.stmt, params).all()
