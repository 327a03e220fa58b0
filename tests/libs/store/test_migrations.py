import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from libs.store.tables import metadata

pytestmark = pytest.mark.db


def test_migrations_create_every_table(engine):
    names = set(inspect(engine).get_table_names())
    assert {"resources", "resource_values", "group_members", "applied_writes", "changes"} <= names


def test_the_migrated_schema_matches_the_tables_the_code_uses(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
