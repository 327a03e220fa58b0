"""Many rows in one INSERT (libs.store.bulk): on PostgreSQL the rows travel as one JSON text
(binary arrays where JSON cannot carry them), so every awkward value must arrive exactly as
sent, on both stores."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from libs.store.bulk import insert_rows
from libs.store.tables import changes, rejected_writes, resource_values, resources

AWKWARD = ['{"a": "b\\\\c"}', "comma, {brace} and \"quote\"", "back\\slash", "NULL", "", "ünïcødé ✓ 𝄞", "  spaced  ",
           "line\nbreak\ttab"]


def _resource(i: int, text: str, at: datetime) -> dict:
    return {"app": "default", "resource_type": "User", "id": f"id-{i}", "version": 1, "created": at,
            "last_modified": at, "name": text, "name_key": f"key-{i}", "doc": text, "active": None if i % 2 else i > 2}


def test_awkward_text_nulls_times_and_numbers_come_back_as_sent(engine):
    at = datetime(2026, 11, 29, 12, 30, 15, 123456, tzinfo=timezone.utc)
    with engine.begin() as conn:
        rows = [_resource(i, text, at + timedelta(seconds=i)) for i, text in enumerate(AWKWARD)]
        pks = dict((r.id, r.pk) for r in insert_rows(conn, resources, rows, returning=("id", "pk")))
        assert sorted(pks) == sorted(r["id"] for r in rows)
        stored = {r.id: r for r in conn.execute(select(resources))}
        for row in rows:
            got = stored[row["id"]]
            created = got.created if got.created.tzinfo else got.created.replace(tzinfo=timezone.utc)  # SQLite: naive
            assert (got.name, got.doc, got.active, created) == (row["name"], row["doc"], row["active"], row["created"])
        values = [{"resource_pk": pks[f"id-{i}"], "path": "userName", "ordinal": i, "str_value": text,
                   "ci_value": None, "ci_key": None, "num_value": [None, 1.5, float(2**40), -0.0][i % 4]}
                  for i, text in enumerate(AWKWARD)]
        insert_rows(conn, resource_values, values)
        got = sorted((r.ordinal, r.str_value, r.ci_value, r.num_value) for r in conn.execute(select(resource_values)))
        assert got == [(v["ordinal"], v["str_value"], None, v["num_value"]) for v in values]


def test_a_column_of_nothing_but_nulls_is_stored_as_nulls(engine):
    at = datetime.now(timezone.utc)
    rows = [{"app": "default", "resource_type": "User", "resource_id": f"r{i}", "op": "create", "version": 1,
             "job_id": f"j{i}", "request_id": None, "at": at, "token_name": None, "client_ip": None} for i in range(3)]
    with engine.begin() as conn:
        insert_rows(conn, changes, rows)
        assert [(r.request_id, r.token_name, r.outcome) for r in conn.execute(select(changes))] == [(None, None, "ok")] * 3
        insert_rows(conn, rejected_writes, [])  # no rows: no statement


def test_numbers_json_cannot_carry_come_back_as_sent(engine):
    import math

    import pytest

    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite stores NaN as NULL")
    at = datetime.now(timezone.utc)
    with engine.begin() as conn:
        (pk,) = [r.pk for r in insert_rows(conn, resources, [_resource(0, "n", at)], returning=("pk",))]
        numbers = [float("inf"), float("-inf"), float("nan"), 2.5]
        insert_rows(conn, resource_values, [{"resource_pk": pk, "path": "x", "ordinal": i, "str_value": None,
                                             "ci_value": None, "ci_key": None, "num_value": n}
                                            for i, n in enumerate(numbers)])
        got = [r.num_value for r in conn.execute(select(resource_values).order_by(resource_values.c.ordinal))]
    assert got[:2] + got[3:] == [float("inf"), float("-inf"), 2.5] and math.isnan(got[2])
