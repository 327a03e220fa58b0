"""Opening a role's store (libs/store/access.py): the engine is built inside libs/store and
the readiness check, the commit position and the libraries that run SQL reach it through the store."""

from __future__ import annotations

from libs.config import Settings
from libs.security.credentials import CredentialAdmin
from libs.store.access import commit_position, database_problem, engine_of, open_reader_store, open_store


def test_an_opened_store_answers_readiness_and_serves_the_credential_admin(database_url):
    store = open_store(Settings(), url=database_url, pool_size=1)
    try:
        assert database_problem(store) is None
        cred, _ = CredentialAdmin(store).create("default", "entra")
        assert [c.name for c in CredentialAdmin(engine_of(store)).list("default")] == [cred.name]
        position = commit_position(store)
        assert position is None if database_url.startswith("sqlite") else position > 0
    finally:
        engine_of(store).dispose()


def test_a_store_whose_database_is_down_is_a_short_reason_not_an_exception():
    store = open_reader_store(Settings(), "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")
    assert database_problem(store).startswith("database unreachable")
