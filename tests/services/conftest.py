"""The running stack for HTTP-level tests: one per database backend, per test session."""

from __future__ import annotations

import uuid

import pytest

from tests.support.stack import running_stack


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory):
    database_url = None
    if request.param == "postgresql":
        base = request.getfixturevalue("postgres_url")
        database_url = _fresh_schema(base)
    # acme enforces unique group names, the default app keeps RFC 7643's "none".
    with running_stack(tmp_path_factory.mktemp(f"stack-{request.param}"), database_url,
                       extra_env={"SCIM_APPS": "acme", "SCIM_GROUP_DISPLAY_NAME_UNIQUENESS": "acme=server"}) as s:
        yield s


def _fresh_schema(base: str) -> str:
    from sqlalchemy import text

    from libs.store.session import create_engine_from_url

    schema = "s_" + uuid.uuid4().hex[:12]
    engine = create_engine_from_url(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that failed against the shared stack shows the tails of its logs (CI keeps no files)."""
    report = yield
    if report.failed and call.when == "call" and (stack := item.funcargs.get("stack")) is not None:
        report.sections.append(("stack logs", stack.diagnostics()))
    return report


@pytest.fixture
def scim(stack):
    with stack.client() as client:
        yield client


def unique(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def acme_token(stack):
    """A read/write token of the second SCIM app, ``acme`` (issue 5: tokens are per app)."""
    return stack.create_token(unique("acme"), app="acme")["token"]


@pytest.fixture
def acme(stack, acme_token):
    """A client holding acme's token; paths are relative to /scim, like ``scim``'s."""
    with stack.client(acme_token) as client:
        yield client
