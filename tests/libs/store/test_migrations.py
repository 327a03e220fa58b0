import json
import uuid
from datetime import datetime, timezone

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from libs.scim.schemas import GROUP, USER
from libs.store.migrate import alembic_config, upgrade
from libs.store.session import create_engine_from_url
from libs.store.tables import metadata

pytestmark = pytest.mark.db


def test_migrations_create_every_table(engine):
    names = set(inspect(engine).get_table_names())
    assert {"resources", "resource_values", "group_members", "applied_writes", "changes"} <= names


def test_the_migrated_schema_matches_the_tables_the_code_uses(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


# ---- 0004: externalId not unique, names unique through unique_name_key ------------------

NOW = datetime(2026, 1, 2, tzinfo=timezone.utc)


def fill_at_0003(engine) -> dict[str, int]:
    """What a 0003 database holds: users and a group with members and values, every name and
    externalId unique as its unique indexes required. Plain SQL: the code's tables are the
    newer ones; the database numbers the rows, as it did then."""
    rows = {"resources": 0, "resource_values": 0, "group_members": 0}
    with engine.begin() as conn:
        def resource(n: int, kind: str, name: str, external_id: str, doc: dict) -> int:
            rows["resources"] += 1
            return conn.execute(text(
                "INSERT INTO resources (app, resource_type, id, external_id, name, name_key, display_name, "
                "active, created, last_modified, version, doc) VALUES ('default', :kind, :id, :ext, :name, "
                ":key, :name, :active, :now, :now, 1, :doc) RETURNING pk"),
                {"kind": kind, "id": str(uuid.UUID(int=n)), "ext": external_id, "name": name, "key": name.lower(),
                 "active": True if kind == "User" else None, "now": NOW,
                 "doc": json.dumps({**doc, "externalId": external_id})}).scalar_one()
        users = []
        for n in (1, 2, 3):
            pk = resource(n, "User", f"John{n}@Contoso.example", f"john{n}",
                          {"schemas": [USER], "userName": f"John{n}@Contoso.example", "title": "Eng"})
            conn.execute(text("INSERT INTO resource_values (resource_pk, path, ordinal, str_value, ci_value, ci_key) "
                              "VALUES (:pk, 'title', 0, 'Eng', 'eng', 'eng')"), {"pk": pk})
            rows["resource_values"] += 1
            users.append(pk)
        group = resource(4, "Group", "Marketing", "objid-4", {"schemas": [GROUP], "displayName": "Marketing"})
        for member in users[:2]:
            conn.execute(text("INSERT INTO group_members (group_pk, member_pk) VALUES (:g, :m)"),
                         {"g": group, "m": member})
            rows["group_members"] += 1
    return rows


def _counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in ("resources", "resource_values", "group_members")}


def _insert_user(conn, n: int, name: str, external_id: str, unique_name_key: str | None) -> None:
    conn.execute(text(
        "INSERT INTO resources (app, resource_type, id, external_id, name, name_key, unique_name_key, "
        "created, last_modified, version, doc) VALUES ('default', 'User', :id, :ext, :name, :key, :ukey, "
        ":now, :now, 1, '{}')"),
        {"id": str(uuid.UUID(int=n)), "ext": external_id, "name": name, "key": name.lower(),
         "ukey": unique_name_key, "now": NOW})


def test_0004_keeps_every_row_of_a_0003_database_and_lets_external_ids_repeat(unmigrated_database_url):
    upgrade(unmigrated_database_url, "0003")
    engine = create_engine_from_url(unmigrated_database_url)
    try:
        before = fill_at_0003(engine)
        upgrade(unmigrated_database_url)  # through 0004 to head
        assert _counts(engine) == before  # the table was rebuilt on SQLite: no cascade emptied its children
        with engine.connect() as conn:
            keys = dict(conn.execute(text("SELECT name, unique_name_key FROM resources")).all())
        assert keys == {"John1@Contoso.example": "john1@contoso.example", "John2@Contoso.example": "john2@contoso.example",
                        "John3@Contoso.example": "john3@contoso.example", "Marketing": "marketing"}
        indexes = {i["name"]: bool(i["unique"]) for i in inspect(engine).get_indexes("resources")}
        assert indexes["ix_resources_app_resource_type_external_id"] is False  # indexed: one probe per lookup
        assert indexes["ix_resources_app_resource_type_name_key"] is False
        assert indexes["ix_resources_app_resource_type_unique_name_key"] is True
        with engine.begin() as conn:
            _insert_user(conn, 10, "john@fabrikam.example", "john1", "john@fabrikam.example")  # externalId again
            _insert_user(conn, 11, "JOHN1@contoso.example", "other", None)  # a name not bound to be unique
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _insert_user(conn, 12, "john2@CONTOSO.example", "other", "john2@contoso.example")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM resources WHERE external_id = 'john1'")).scalar_one() == 2
    finally:
        engine.dispose()


def test_0004_downgrades_a_database_without_repeated_names_or_external_ids(unmigrated_database_url):
    upgrade(unmigrated_database_url, "0003")
    engine = create_engine_from_url(unmigrated_database_url)
    try:
        before = fill_at_0003(engine)
        upgrade(unmigrated_database_url)
        command.downgrade(alembic_config(unmigrated_database_url), "0003")
        assert _counts(engine) == before
        with pytest.raises(IntegrityError), engine.begin() as conn:  # the old unique index is back
            conn.execute(text(
                "INSERT INTO resources (app, resource_type, id, external_id, name, name_key, created, last_modified, "
                "version, doc) VALUES ('default', 'User', 'x', 'john1', 'x', 'x', :now, :now, 1, '{}')"), {"now": NOW})
    finally:
        engine.dispose()
