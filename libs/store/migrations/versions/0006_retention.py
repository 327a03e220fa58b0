"""Retention (issue 18): an index for purging the delivery ledger of resources that are gone.

The sweeper's retention (libs/store/retention.py) deletes ``delivery_state`` rows of removed
resources once handled and old; ``(present, updated_at)`` lets it find them without walking
every live resource's row each round. ``applied_writes`` and ``changes`` are purged by the
indexes they already have (``applied_at``; ``seq``).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_delivery_state_present_updated_at"), "delivery_state", ["present", "updated_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_state_present_updated_at"), table_name="delivery_state")
