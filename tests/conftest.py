"""Shared fixtures: real Redis and real databases, started once per test session.

Markers gate the real services (snuba's pattern): a test that needs Redis says
``@pytest.mark.redis`` and a test over the store says ``@pytest.mark.db``; ``db`` tests
run once per backend (SQLite file, PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.support.servers import postgres_server, redis_server

_ENV_KEEP = {k: v for k, v in os.environ.items()}


@pytest.fixture(autouse=True)
def _reset_env() -> Iterator[None]:
    """Tests may set SCIM_* variables; each one starts from the session's environment."""
    yield
    for key in [k for k in os.environ if k.startswith("SCIM_") and k not in _ENV_KEEP]:
        del os.environ[key]
    for key, value in _ENV_KEEP.items():
        if key.startswith("SCIM_") and os.environ.get(key) != value:
            os.environ[key] = value


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    given = os.environ.get("SCIM_TEST_REDIS_URL")
    if given:
        yield given
        return
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_conn(redis_url: str):
    """A clean Redis database for one test (flushed before and after)."""
    from redis import Redis

    conn = Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    given = os.environ.get("SCIM_TEST_DATABASE_URL")
    if given:
        yield given
        return
    with postgres_server() as url:
        yield url


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def unmigrated_database_url(request, tmp_path) -> Iterator[str]:
    """An empty database without any table: a SQLite file or a fresh PostgreSQL schema."""
    from libs.store.session import create_engine_from_url

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'scimbus.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = "t_" + uuid.uuid4().hex[:12]
    engine = create_engine_from_url(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn, contextlib.suppress(Exception):
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def database_url(unmigrated_database_url) -> str:
    """An empty, migrated database: a SQLite file or a fresh PostgreSQL schema."""
    from libs.store.migrate import upgrade

    upgrade(unmigrated_database_url)
    return unmigrated_database_url


@pytest.fixture
def engine(database_url: str):
    from libs.store.session import create_engine_from_url

    eng = create_engine_from_url(database_url)
    yield eng
    eng.dispose()
