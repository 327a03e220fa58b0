"""The directory store's read side: prebuilt statements answer as the filter compiler does,
and every read on the reader's pool (no ping on checkout) survives a PostgreSQL restart."""

from __future__ import annotations

import pytest

from libs.scim.filter import parse_filter
from libs.scim.schemas import GROUPS, USERS
from libs.store.directory import DirectoryStore
from libs.store.query import name_key_of
from libs.store.session import create_engine_from_url
from tests.libs.store.test_query import add_member, add_resource


def _user(i: int, **extra) -> dict:
    return {"schemas": [USERS.core.urn], "id": f"u{i}", "userName": f"User{i}@Contoso.com", "active": True, **extra}


@pytest.fixture
def store(database_url: str):
    engine = create_engine_from_url(database_url, read_only=True)
    with engine.begin() as conn:
        pks = [add_resource(conn, USERS, _user(i)) for i in range(3)]
        g1 = add_resource(conn, GROUPS, {"schemas": [GROUPS.core.urn], "id": "g1", "displayName": "Sales"})
        add_resource(conn, GROUPS, {"schemas": [GROUPS.core.urn], "id": "g2", "displayName": "Empty"})
        add_member(conn, g1, pks[1])
    yield DirectoryStore(engine)
    engine.dispose()


def _general(store: DirectoryStore, schema, text: str, **kw):
    """The same search through the compiled filter: ``sortBy`` turns the prebuilt path off."""
    return store.search("default", schema, parse_filter(text), sort_by="id", **kw)


@pytest.mark.parametrize("text", ['userName eq "user1@contoso.com"', 'USERNAME eq "USER1@CONTOSO.COM"',
                                  'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "User1@contoso.com"',
                                  'userName eq "nobody"'])
@pytest.mark.parametrize("paging", [{}, {"start_index": 2}, {"count": 0}, {"with_groups": False}])
def test_a_username_eq_search_answers_as_the_compiled_filter(store, text, paging):
    assert name_key_of(parse_filter(text), USERS) is not None
    assert store.search("default", USERS, parse_filter(text), **paging) == _general(store, USERS, text, **paging)


def test_a_user_in_a_group_lists_it_and_one_in_none_has_no_groups_attribute(store):
    _, (grouped,) = store.search("default", USERS, parse_filter('userName eq "user1@contoso.com"'))
    _, (alone,) = store.search("default", USERS, parse_filter('userName eq "user2@contoso.com"'))
    assert grouped["groups"] == [{"value": "g1", "display": "Sales", "type": "direct"}]
    assert "groups" not in alone
    assert store.get("default", USERS, "u1")["groups"] == grouped["groups"]
    assert "groups" not in store.get("default", USERS, "u1", with_groups=False)


def test_groups_by_display_name_keep_their_members_and_an_empty_group_an_empty_list(store):
    _, (sales,) = store.search("default", GROUPS, parse_filter('displayName eq "sales"'))
    _, (empty,) = store.search("default", GROUPS, parse_filter('displayName eq "EMPTY"'))
    assert [m["value"] for m in sales["members"]] == ["u1"]
    assert empty["members"] == []
    _, (bare,) = store.search("default", GROUPS, parse_filter('displayName eq "sales"'), with_members=False)
    assert "members" not in bare


@pytest.mark.parametrize("text", ['userName ne "x"', 'userName sw "user"', 'emails eq "x"', 'displayName eq "x"',
                                  'userName eq "a" and active eq true', 'userName.x eq "a"'])
def test_other_filters_take_the_compiler(text):
    try:
        node = parse_filter(text)
    except Exception:  # not even a filter: nothing to decide
        return
    try:
        assert name_key_of(node, USERS) is None
    except Exception as exc:  # an unknown attribute is the compiler's InvalidFilter as well
        assert type(exc).__name__ == "InvalidFilter"


@pytest.mark.servers
def test_the_first_read_after_a_postgresql_restart_answers():
    from libs.store.migrate import upgrade
    from tests.support.servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        upgrade(server.url)
        engine = create_engine_from_url(server.url, read_only=True)
        store = DirectoryStore(engine)
        with engine.begin() as conn:
            add_resource(conn, USERS, _user(1))
        node = parse_filter('userName eq "user1@contoso.com"')
        with engine.connect(), engine.connect():  # two pooled connections, both killed by the restart
            pass
        assert store.search("default", USERS, node)[0] == 1
        server.stop()
        server.start()
        assert store.search("default", USERS, node)[0] == 1
        assert store.get("default", USERS, "u1")["id"] == "u1"
        engine.dispose()
    finally:
        server.close()


@pytest.mark.servers
def test_a_reader_process_that_never_read_credentials_or_keys_answers_after_a_restart():
    """A reader process whose pool holds only connections from before the restart (its
    readiness probes made them) and whose caches are empty: its first request after the
    restart is authenticated, not answered 503."""
    from datetime import timedelta

    from libs.health import database_problem
    from libs.security.credentials import CredentialCache
    from libs.security.jwt_tokens import SigningKeys
    from libs.store.migrate import upgrade
    from tests.support.servers import PostgresServer

    server = PostgresServer()
    server.start()
    try:
        upgrade(server.url)
        engine = create_engine_from_url(server.url, read_only=True)
        with engine.connect(), engine.connect():
            pass
        server.stop()
        server.start()
        credentials = CredentialCache(engine, 5, CredentialCache.bootstrap_tokens(("s3cret",), "default"))
        assert credentials.find("s3cret").app == "default"
        keys = SigningKeys(engine, max_age=timedelta(days=30), token_ttl=3600, refresh=5)
        with engine.connect(), engine.connect():  # stale again, for the next reader of the pool
            pass
        server.stop()
        server.start()
        assert keys.jwks() == {"keys": []}
        server.stop()
        server.start()
        assert database_problem(engine) is None
        engine.dispose()
    finally:
        server.close()
