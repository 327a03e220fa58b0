"""Retention and the delivery log (issue 18).

- ``ix_delivery_state_present_updated_at``: the sweeper's retention (libs/store/retention.py)
  deletes ``delivery_state`` rows of removed resources once handled and old; the index lets
  it find them without walking every live resource's row each round. ``applied_writes`` and
  ``changes`` are purged by the indexes they already have (``applied_at``; ``seq``).
- ``delivery_log``: when each delivery brought a target up to which change of a resource,
  so ``scimbus audit`` tells when a change reached each connector. Empty at upgrade: changes
  delivered before it show as delivered, without a time.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_index(op.f("ix_delivery_state_present_updated_at"), "delivery_state", ["present", "updated_at"])
    op.create_table(
        "delivery_log",
        sa.Column("pk", PK, autoincrement=True, nullable=False),
        sa.Column("connector", sa.String(length=64), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_delivery_log")),
    )
    op.create_index(op.f("ix_delivery_log_app_resource_type_resource_id_connector_seq"), "delivery_log",
                    ["app", "resource_type", "resource_id", "connector", "seq"])
    op.create_index(op.f("ix_delivery_log_at"), "delivery_log", ["at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_delivery_log_at"), table_name="delivery_log")
    op.drop_index(op.f("ix_delivery_log_app_resource_type_resource_id_connector_seq"), table_name="delivery_log")
    op.drop_table("delivery_log")
    op.drop_index(op.f("ix_delivery_state_present_updated_at"), table_name="delivery_state")
