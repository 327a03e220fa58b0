"""The SQL connector against real application databases: SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import os
import socket
import tomllib
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from libs.connectors.base import Previous
from libs.connectors.errors import Rejected, Unavailable
from libs.connectors.mapping import MappingError
from libs.connectors.registry import build_connector
from tests.support.servers import free_port
from tests.support.targets import APP_SCHEMA, app_engine, create_app_schema, sql_connector_toml

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MARIADB_DEFAULT = "mysql://root@127.0.0.1:3306/test"


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 3306), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def app_db(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    elif request.param == "postgresql":
        base = request.getfixturevalue("postgres_url")
        schema = "app_" + uuid.uuid4().hex[:10]
        engine = app_engine(base)
        with engine.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        url = f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    else:
        # MariaDB is not started by the tests: use the one named by SCIM_TEST_MARIADB_URL (or the
        # local default) and skip only when none answers.
        url = os.environ.get("SCIM_TEST_MARIADB_URL") or MARIADB_DEFAULT
        if not _reachable(url):
            pytest.skip(f"MariaDB not reachable at {make_url(url).render_as_string(hide_password=True)} "
                        "(set SCIM_TEST_MARIADB_URL to a server with an empty database)")
    create_app_schema(url)
    yield url
    engine = app_engine(url)
    APP_SCHEMA.drop_all(engine)
    engine.dispose()


def _connector(url: str, on_delete: str = "delete"):
    spec = tomllib.loads(sql_connector_toml("appdb", url, on_delete=on_delete))["connectors"]["appdb"]
    return build_connector("appdb", spec)


def _user(name: str, **extra) -> dict:
    doc = {"schemas": [], "id": str(uuid.uuid4()), "userName": name, "active": True,
           "name": {"givenName": "Ada", "familyName": "Lovelace"},
           "emails": [{"type": "home", "value": "home@x"}, {"type": "work", "value": f"{name}@work"}],
           ENTERPRISE: {"department": "R&D"}}
    doc.update(extra)
    return doc


class Directory:
    def __init__(self, *docs: dict) -> None:
        self.docs = {d["id"]: d for d in docs}

    def __call__(self, resource_type: str, ids: list[str]) -> dict:
        return {i: self.docs[i] for i in ids if i in self.docs}


def _deliver(connector, kind: str, doc: dict, directory: Directory) -> str:
    fields = connector.render(kind, doc, directory)
    return connector.apply(kind, doc, fields, Previous(None, False), directory)


def test_users_groups_and_memberships_are_upserted_with_the_column_mapping(app_db):
    connector = _connector(app_db)
    boss = _user("Boss")
    ada = _user("Ada", **{ENTERPRISE: {"department": "R&D", "manager": {"value": boss["id"]}}})
    group = {"id": str(uuid.uuid4()), "displayName": "Engineers",
             "members": [{"value": ada["id"], "type": "User"}, {"value": boss["id"], "type": "User"}]}
    directory = Directory(boss, ada, group)
    for _ in range(2):  # the same state twice leaves the target as once
        for doc in (boss, ada):
            _deliver(connector, "User", doc, directory)
        _deliver(connector, "Group", group, directory)
    engine = app_engine(app_db)
    t = APP_SCHEMA.tables
    with engine.connect() as conn:
        row = conn.execute(select(t["app_users"]).where(t["app_users"].c.scim_id == ada["id"])).one()
        assert (row.login, row.full_name, row.email, row.department, row.manager_login, bool(row.enabled)) == \
            ("ada", "Ada Lovelace", "Ada@work", "R&D", "boss", True)
        assert len(conn.execute(select(t["app_users"])).all()) == 2
        members = {(r.group_id, r.user_id) for r in conn.execute(select(t["app_memberships"]))}
        assert members == {(group["id"], ada["id"]), (group["id"], boss["id"])}

    group["members"] = [{"value": boss["id"], "type": "User"}]
    _deliver(connector, "Group", group, directory)
    connector.remove("User", ada["id"], Previous(ada["id"], True))
    with engine.connect() as conn:
        assert {(r.group_id, r.user_id) for r in conn.execute(select(t["app_memberships"]))} == \
            {(group["id"], boss["id"])}
        assert [r.scim_id for r in conn.execute(select(t["app_users"]))] == [boss["id"]]
    assert set(connector.read("User")) == {boss["id"]}
    assert connector.read("Group")[group["id"]]["members"] == [boss["id"]]
    engine.dispose()
    connector.close()


def test_on_delete_disable_keeps_the_row_and_clears_its_enabled_flag(app_db):
    connector = _connector(app_db, on_delete="disable")
    ada = _user("ada")
    _deliver(connector, "User", ada, Directory(ada))
    connector.remove("User", ada["id"], Previous(ada["id"], True))
    read = connector.read("User")
    assert connector.is_removed("User", read[ada["id"]])
    connector.close()


def test_a_row_the_target_refuses_is_a_permanent_failure(app_db):
    connector = _connector(app_db)
    first, clash = _user("same"), _user("SAME")  # login is unique in the application's table
    _deliver(connector, "User", first, Directory(first))
    with pytest.raises(Rejected):
        _deliver(connector, "User", clash, Directory(clash))
    connector.close()


def test_a_refused_row_is_reported_without_the_values_it_carried(app_db):
    """The error goes to the delivery ledger, and its cause to the logs: it names the statement
    and the key the target refused, never the user's other attributes bound to it (issue 16)."""
    connector = _connector(app_db)
    first, clash = _user("same"), _user("SAME")
    clash["name"] = {"givenName": "Secret", "familyName": "Person"}
    _deliver(connector, "User", first, Directory(first))
    with pytest.raises(Rejected) as refused:
        _deliver(connector, "User", clash, Directory(clash))
    for error in (refused.value, refused.value.__cause__):  # the cause is what a logged traceback prints
        assert "Secret Person" not in str(error) and "SAME@work" not in str(error)
    connector.close()


def test_a_key_column_that_could_change_is_refused_when_the_config_is_read(tmp_path):
    spec = tomllib.loads(sql_connector_toml("appdb", f"sqlite:///{tmp_path / 'app.db'}"))["connectors"]["appdb"]
    spec["users"]["key"] = "login"  # follows userName: a rename would leave the row under the old key
    with pytest.raises(MappingError, match="users: the key column must be mapped from id"):
        build_connector("appdb", spec)


def test_an_unreachable_database_is_a_retryable_failure():
    connector = _connector(f"postgresql://nobody@127.0.0.1:{free_port()}/app")
    ada = _user("ada")
    with pytest.raises(Unavailable):
        _deliver(connector, "User", ada, Directory(ada))
    connector.close()
