"""Downstream deliveries: per-connector delivery state, dead letters, sweeper cursors.

Frozen DDL, like 0001. Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('delivery_state',
    sa.Column('connector', sa.String(length=64), nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('delivered_seq', sa.BigInteger(), nullable=False),
    sa.Column('delivered_version', sa.Integer(), nullable=False),
    sa.Column('present', sa.Boolean(), nullable=False),
    sa.Column('remote_id', sa.String(length=1024), nullable=True),
    sa.Column('dead_seq', sa.BigInteger(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('connector', 'app', 'resource_type', 'resource_id', name=op.f('pk_delivery_state'))
    )
    op.create_table('dead_letters',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('connector', sa.String(length=64), nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('retried_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_dead_letters'))
    )
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dead_letters_connector_retried_at'), ['connector', 'retried_at'], unique=False)

    op.create_table('delivery_cursors',
    sa.Column('connector', sa.String(length=64), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('connector', name=op.f('pk_delivery_cursors'))
    )


def downgrade() -> None:
    op.drop_table('delivery_cursors')
    with op.batch_alter_table('dead_letters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dead_letters_connector_retried_at'))
    op.drop_table('dead_letters')
    op.drop_table('delivery_state')
