import pytest
from sqlalchemy import inspect

pytestmark = pytest.mark.db


def test_migrations_create_every_table(engine):
    names = set(inspect(engine).get_table_names())
    assert {"resources", "resource_values", "group_members", "applied_writes", "changes"} <= names
