"""Security: credentials (hashed tokens, OAuth clients), signing keys, audit columns.

Frozen DDL, like 0001: who wrote each change (token name, client IP) and its outcome go on
``changes``; writes a worker refused go to ``rejected_writes`` (never the outbox).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("changes") as batch_op:
        batch_op.add_column(sa.Column("token_name", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("client_ip", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("outcome", sa.String(length=64), nullable=False, server_default="ok"))
        batch_op.create_index(batch_op.f("ix_changes_at"), ["at"], unique=False)

    op.create_table(
        "rejected_writes",
        sa.Column("seq", PK, autoincrement=True, nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=32), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("op", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("token_name", sa.String(length=128), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_rejected_writes")),
    )
    op.create_index(op.f("ix_rejected_writes_at"), "rejected_writes", ["at"], unique=False)

    op.create_table(
        "credentials",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("scopes", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credentials")),
        sa.UniqueConstraint("app", "name", name=op.f("uq_credentials_app_name")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_credentials_secret_hash")),
    )

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_table("credentials")
    op.drop_index(op.f("ix_rejected_writes_at"), table_name="rejected_writes")
    op.drop_table("rejected_writes")
    with op.batch_alter_table("changes") as batch_op:
        batch_op.drop_index(batch_op.f("ix_changes_at"))
        batch_op.drop_column("outcome")
        batch_op.drop_column("client_ip")
        batch_op.drop_column("token_name")
