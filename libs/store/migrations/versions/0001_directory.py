"""The directory: resources, value index, group members, idempotency records, changes.

Revision ID: 0001
Revises:
"""

from alembic import op

from libs.store import tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TABLES = (tables.resources, tables.resource_values, tables.members, tables.applied_writes, tables.changes)


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        table.drop(bind)
