"""The directory: resources, value index, group members, idempotency records, changes.

Frozen DDL (not the live metadata of libs.store.tables): later changes to the tables get
migrations of their own; tests/libs/store/test_migrations.py checks that the migrated
schema matches tables.py.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('applied_writes',
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('result', sa.Text(), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('job_id', name=op.f('pk_applied_writes'))
    )
    with op.batch_alter_table('applied_writes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_applied_writes_applied_at'), ['applied_at'], unique=False)

    op.create_table('changes',
    sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('resource_id', sa.String(length=64), nullable=False),
    sa.Column('op', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('request_id', sa.String(length=128), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_changes'))
    )
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_changes_app_resource_type_resource_id'), ['app', 'resource_type', 'resource_id'], unique=False)

    op.create_table('resources',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('app', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=1024), nullable=True),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('name_key', sa.String(length=1024), nullable=False),
    sa.Column('display_name', sa.String(length=1024), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=True),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_modified', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('doc', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_resources')),
    sa.UniqueConstraint('app', 'resource_type', 'external_id', name=op.f('uq_resources_app_resource_type_external_id')),
    sa.UniqueConstraint('app', 'resource_type', 'id', name=op.f('uq_resources_app_resource_type_id')),
    sa.UniqueConstraint('app', 'resource_type', 'name_key', name=op.f('uq_resources_app_resource_type_name_key'))
    )
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resources_app_resource_type_last_modified'), ['app', 'resource_type', 'last_modified'], unique=False)

    op.create_table('group_members',
    sa.Column('group_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('member_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['group_pk'], ['resources.pk'], name=op.f('fk_group_members_group_pk_resources'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['member_pk'], ['resources.pk'], name=op.f('fk_group_members_member_pk_resources'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_pk', 'member_pk', name=op.f('pk_group_members'))
    )
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_group_members_member_pk'), ['member_pk'], unique=False)

    op.create_table('resource_values',
    sa.Column('resource_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('ordinal', sa.Integer(), nullable=False),
    sa.Column('str_value', sa.Text(), nullable=True),
    sa.Column('ci_value', sa.Text(), nullable=True),
    sa.Column('ci_key', sa.String(length=128), nullable=True),
    sa.Column('num_value', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['resource_pk'], ['resources.pk'], name=op.f('fk_resource_values_resource_pk_resources'), ondelete='CASCADE')
    )
    with op.batch_alter_table('resource_values', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_resource_values_path_ci_key'), ['path', 'ci_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_resource_values_resource_pk'), ['resource_pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('resource_values', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resource_values_resource_pk'))
        batch_op.drop_index(batch_op.f('ix_resource_values_path_ci_key'))

    op.drop_table('resource_values')
    with op.batch_alter_table('group_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_group_members_member_pk'))

    op.drop_table('group_members')
    with op.batch_alter_table('resources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_resources_app_resource_type_last_modified'))

    op.drop_table('resources')
    with op.batch_alter_table('changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_changes_app_resource_type_resource_id'))

    op.drop_table('changes')
    with op.batch_alter_table('applied_writes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_applied_writes_applied_at'))

    op.drop_table('applied_writes')
