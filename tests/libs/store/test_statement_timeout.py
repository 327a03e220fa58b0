"""The reader's statement timeout (issue 16): PostgreSQL's statement_timeout and, on SQLite, a
progress handler past a deadline, both stop a statement that runs too long and leave the
connection ready for the next one."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from libs.store.session import StatementTimeout, create_engine_from_url, read_reconnecting

pytestmark = pytest.mark.db

# Several seconds of work on either backend, were it not stopped.
SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 200000000) "
              "SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(20)",
}


def test_a_statement_past_the_timeout_is_stopped_and_the_connection_serves_the_next(database_url):
    engine = create_engine_from_url(database_url, read_only=True, pool_size=1, statement_timeout=0.2)
    slow = SLOW[engine.dialect.name]
    try:
        for _ in range(2):  # the same pooled connection, twice
            started = time.monotonic()
            with pytest.raises(StatementTimeout):
                read_reconnecting(engine, lambda conn: conn.execute(text(slow)).all())
            assert time.monotonic() - started < 5
            assert read_reconnecting(engine, lambda conn: conn.execute(text("SELECT 1")).scalar_one()) == 1
    finally:
        engine.dispose()


def test_an_engine_without_a_timeout_lets_a_statement_run(database_url):
    engine = create_engine_from_url(database_url, read_only=True, pool_size=1)
    quick = {"sqlite": SLOW["sqlite"].replace("200000000", "200000"), "postgresql": "SELECT pg_sleep(0.3)"}
    try:
        assert read_reconnecting(engine, lambda conn: conn.execute(text(quick[engine.dialect.name])).all())
    finally:
        engine.dispose()
