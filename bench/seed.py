"""Fill a directory store with users directly, as the worker would have written them.

Through HTTP a million users take hours; here they take minutes. Each row is built by the
store's own row builders (``directory._row_values``, ``values.flatten``) from a document
that ``validate_resource`` produced, so a seeded user is indistinguishable from one the
worker created: same ``resources`` columns, same ``resource_values`` index rows.

Primary keys are allocated up front (PostgreSQL: from the table's sequence; SQLite: after
the current maximum), so resources and their value rows go in as independent batches:
``COPY`` on PostgreSQL, multi-row inserts on SQLite.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, func, insert, select, text

from libs.scim.schemas import USERS
from libs.scim.validate import validate_resource
from libs.store.directory import _row_values
from libs.store.tables import resource_values, resources
from libs.store.values import flatten

BATCH = 5_000
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
_VALUE_COLUMNS = ("resource_pk", "path", "ordinal", "str_value", "ci_value", "ci_key", "num_value")


def user_name(i: int) -> str:
    return f"seed-{i:08d}@contoso.com"


def number_of(name: str) -> int | None:
    """The ``i`` of ``user_name(i)``, or None for another name."""
    if not (name.startswith("seed-") and name.endswith("@contoso.com")):
        return None
    digits = name[5:-12]
    return int(digits) if digits.isdigit() else None


def user_body(i: int) -> dict[str, Any]:
    """An Entra-shaped create body (the bench's ``user_body``) for user number ``i``."""
    name = user_name(i)
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": f"ext-{i:08d}",
        "userName": name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": name}],
        "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
        ENTERPRISE: {"employeeNumber": str(1_000_000 + i), "department": "Sales"},
    }


class UserDocs:
    """Validated user documents, ``validate_resource``'s output for ``user_body(i)``.

    Validating costs more than writing; every body shares one shape, so the template is
    validated once and only the per-user strings are put in (``tests/bench`` checks the
    result against ``validate_resource`` itself).
    """

    def __init__(self) -> None:
        self.template = validate_resource(user_body(0), USERS)

    def __call__(self, i: int) -> dict[str, Any]:
        doc = copy.deepcopy(self.template)
        name = user_name(i)
        doc["userName"] = name
        doc["externalId"] = f"ext-{i:08d}"
        doc["emails"][0]["value"] = name
        doc[ENTERPRISE]["employeeNumber"] = str(1_000_000 + i)
        return doc


def _allocate_pks(engine: Engine, n: int) -> list[int]:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            seq = conn.execute(text("SELECT pg_get_serial_sequence('resources', 'pk')")).scalar_one()
            return list(conn.execute(text("SELECT nextval(:seq) FROM generate_series(1, :n)"),
                                     {"seq": seq, "n": n}).scalars())
        top = conn.execute(select(func.coalesce(func.max(resources.c.pk), 0))).scalar_one()
        return list(range(top + 1, top + 1 + n))


def _rows(app: str, first: int, pks: list[int], docs: Callable[[int], dict]) -> tuple[list[dict], list[dict]]:
    now = datetime.now(timezone.utc)
    res, vals = [], []
    for offset, pk in enumerate(pks):
        doc = docs(first + offset)
        res.append({"pk": pk, "app": app, "resource_type": USERS.name, "id": str(uuid.uuid4()), "version": 1,
                    "created": now, "last_modified": now, **_row_values(USERS, doc, unique_name=True)})
        vals += ({"resource_pk": pk, **r} for r in flatten(doc, USERS))
    return res, vals


def _copy(conn: Any, table: str, columns: tuple[str, ...], rows: list[dict]) -> None:
    raw = conn.connection.driver_connection
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy_:
        for row in rows:
            copy_.write_row(tuple(row.get(c) for c in columns))


def _write(engine: Engine, res: list[dict], vals: list[dict]) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            _copy(conn, "resources", tuple(res[0]), res)
            _copy(conn, "resource_values", _VALUE_COLUMNS, vals)
        else:
            conn.execute(insert(resources), res)
            conn.execute(insert(resource_values), [{c: r.get(c) for c in _VALUE_COLUMNS} for r in vals])


def seed_users(engine: Engine, n: int, *, app: str = "default", start: int = 0,
               progress: Callable[[int], None] | None = None) -> None:
    """Insert users ``start`` … ``start + n - 1`` in batches of ``BATCH``, one transaction each."""
    docs = UserDocs()
    done = 0
    while done < n:
        size = min(BATCH, n - done)
        pks = _allocate_pks(engine, size)
        _write(engine, *_rows(app, start + done, pks, docs))
        done += size
        if progress is not None:
            progress(done)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE resources"))
            conn.execute(text("ANALYZE resource_values"))
