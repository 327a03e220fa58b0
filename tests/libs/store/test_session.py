"""Engines (issue 16): the reader's statement timeout (PostgreSQL's statement_timeout and, on
SQLite, a progress handler past a deadline) stops a statement that runs too long and leaves
the connection ready for the next one; no engine puts SQL parameters (documents, password
hashes) into the text of its errors, and so into logs."""

from __future__ import annotations

import io
import logging
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from libs.scim.schemas import USERS
from libs.store.directory import DirectoryStore
from libs.store.session import StatementTimeout, create_engine_from_url, read_reconnecting
from libs.web.logs import JsonFormatter

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


def test_a_database_error_on_a_document_logs_no_sql_parameter(database_url):
    # A second insert of one id fails on the unique index; the statement carried the stored
    # document, password hash included, as parameters, which the error's text used to repeat.
    secret = "$argon2id$v=19$m=65536,t=3,p=4$" + uuid.uuid4().hex
    doc = {"schemas": [USERS.core.urn], "userName": "leak@contoso.com", "password": secret}
    engine = create_engine_from_url(database_url)
    store = DirectoryStore(engine)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("scimbus.test.hidden")
    log.addHandler(handler)
    try:
        with store.transaction() as conn:
            store.insert_resource(conn, "default", USERS, "u-1", doc)
        with pytest.raises(IntegrityError) as caught, store.transaction() as conn:
            store.insert_resource(conn, "default", USERS, "u-1", doc)
        log.error("write failed: %s", caught.value, exc_info=caught.value)
    finally:
        log.removeHandler(handler)
        engine.dispose()
    logged = out.getvalue()
    assert "hide_parameters=True" in logged  # SQLAlchemy's note where the parameters were
    assert secret not in logged
