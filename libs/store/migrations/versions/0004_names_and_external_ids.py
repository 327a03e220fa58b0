"""externalId indexed but not unique; name uniqueness through ``unique_name_key``.

RFC 7643 gives ``externalId`` and a Group's ``displayName`` no uniqueness, and real tenants
repeat both (Entra maps mailNickname, the same in each of a tenant's domains, to
externalId; several groups are named "Marketing"). The unique indexes on
``(app, resource_type, external_id)`` and ``(app, resource_type, name_key)`` become plain
ones, and a new column ``unique_name_key`` carries the name where it must be unique (every
userName; a group's displayName in an app whose setting is "server"), under a unique index.

Every row is kept. Before this revision every name was unique, so each row's
``unique_name_key`` starts as its ``name_key``. Downgrading fails while two resources
of one app share a name or an externalId.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # On SQLite this recreates the table (a UNIQUE of CREATE TABLE cannot be dropped); env.py
    # turns foreign keys off for it, or dropping the old table would empty the tables that
    # reference it (ON DELETE CASCADE).
    with op.batch_alter_table("resources") as batch_op:
        batch_op.drop_constraint("uq_resources_app_resource_type_external_id", type_="unique")
        batch_op.drop_constraint("uq_resources_app_resource_type_name_key", type_="unique")
        batch_op.add_column(sa.Column("unique_name_key", sa.String(length=1024), nullable=True))
        batch_op.create_index("ix_resources_app_resource_type_external_id", ["app", "resource_type", "external_id"])
        batch_op.create_index("ix_resources_app_resource_type_name_key", ["app", "resource_type", "name_key"])
    op.execute("UPDATE resources SET unique_name_key = name_key")
    op.create_index("ix_resources_app_resource_type_unique_name_key", "resources",
                    ["app", "resource_type", "unique_name_key"], unique=True)
    _check_foreign_keys()


def downgrade() -> None:
    op.drop_index("ix_resources_app_resource_type_unique_name_key", table_name="resources")
    with op.batch_alter_table("resources") as batch_op:
        batch_op.drop_index("ix_resources_app_resource_type_name_key")
        batch_op.drop_index("ix_resources_app_resource_type_external_id")
        batch_op.drop_column("unique_name_key")
        batch_op.create_unique_constraint("uq_resources_app_resource_type_name_key",
                                          ["app", "resource_type", "name_key"])
        batch_op.create_unique_constraint("uq_resources_app_resource_type_external_id",
                                          ["app", "resource_type", "external_id"])
    _check_foreign_keys()


def _check_foreign_keys() -> None:
    """SQLite checked no reference while the table was rebuilt: make sure none broke."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"migration 0004 left {len(broken)} broken references, e.g. {broken[0]}")
