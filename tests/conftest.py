"""Shared fixtures: real Redis and real databases, started once per test session.

Markers name the tier a test belongs to, and select it (``pytest -m``):

- ``redis``, ``db``, ``stack``: given to every test that uses the fixtures starting those
  (``redis_url``, ``postgres_url``/``database_url``/``engine``, ``stack``), by
  ``pytest_collection_modifyitems`` below, so a test cannot forget its marker; ``db`` tests
  run once per backend (SQLite file, PostgreSQL). A test that starts servers of its own
  (gunicorn, nginx, slapd, a stack by hand) says ``@pytest.mark.servers``;
- ``unit``: every other test, the tier ``make test-fast`` runs. Under it
  (``SCIM_TEST_TIER=unit``) a TCP connection fails the test at once, naming the address:
  a test that needs a server and lacks its marker cannot hide in the fast tier.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from tests.support.servers import postgres_server, redis_server

_ENV_KEEP = {k: v for k, v in os.environ.items()}

TIER_FIXTURES = {
    "redis": {"redis_url", "redis_conn"},
    "db": {"postgres_url", "unmigrated_database_url", "database_url", "engine"},
    "stack": {"stack"},
}
"""Fixtures that start a server, by the marker a test using them (directly or through
another fixture) gets."""
SERVER_MARKERS = frozenset({*TIER_FIXTURES, "servers", "docker", "slow"})


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        for marker, fixtures in TIER_FIXTURES.items():
            if fixtures & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker(marker):
                item.add_marker(marker)
        if not any(item.get_closest_marker(m) for m in SERVER_MARKERS):
            item.add_marker("unit")


class ServerInUnitTier(RuntimeError):
    """A test of the unit tier reached for a server: it lacks its marker."""


def _no_servers(event: str, args: tuple) -> None:
    if event == "socket.connect" and getattr(args[0], "family", None) in (socket.AF_INET, socket.AF_INET6):
        raise ServerInUnitTier(f"a unit-tier test connected to {args[1]!r}: mark it redis, db, stack or servers "
                               "(tests/conftest.py)")


def pytest_configure(config) -> None:
    if os.environ.get("SCIM_TEST_TIER") == "unit":
        sys.addaudithook(_no_servers)  # an audit hook stays for the process's life: only in that run


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
