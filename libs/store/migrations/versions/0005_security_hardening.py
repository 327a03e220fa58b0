"""Security hardening (issue 16): signing keys sealed at rest, a cursor key of its own.

``signing_keys.private_pem`` (a plaintext PEM) becomes ``sealed_private_key``: the same key
sealed with the key encryption key (libs/security/key_encryption.py), and ``public_pem`` its
public half, which is all that verifying a token or publishing the JWKS reads. Existing keys
keep their kid, so tokens they signed stay valid. Sealing them needs the key encryption key:
a database that holds signing keys cannot be migrated without it (the local run creates
one before it migrates).

``credential_events`` audits credentials made and revoked (who, when, what; no secret).
``changes`` and ``rejected_writes`` keep the client's own X-Request-Id beside ours.
``service_keys`` holds keys the service makes for itself; the "cursor" key that signs paging
cursors (no longer derived from the bearer token) is made here, once per database.

Revision ID: 0005
Revises: 0003
"""

import secrets
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import context, op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sealer():
    from libs.config import load_settings
    from libs.security.key_encryption import Sealer

    return Sealer.from_settings(context.config.attributes.get("settings") or load_settings())


_keys = sa.table("signing_keys", sa.column("kid", sa.String), sa.column("private_pem", sa.Text),
                 sa.column("public_pem", sa.Text), sa.column("sealed_private_key", sa.Text))


def _rewrite_keys(source: str, values) -> None:
    """Each stored signing key's row, given ``values(sealer, text of source)``; the key
    encryption key is looked up only when there is a key to rewrite."""
    conn = op.get_bind()
    rows = conn.execute(sa.select(_keys.c.kid, _keys.c[source])).all()
    if rows:
        sealer = _sealer()
        for kid, text in rows:
            conn.execute(_keys.update().where(_keys.c.kid == kid).values(**values(sealer, text)))


def upgrade() -> None:
    from libs.security.jwt_tokens import public_pem_of

    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.add_column(sa.Column("public_pem", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sealed_private_key", sa.Text(), nullable=True))
    _rewrite_keys("private_pem", lambda sealer, pem: {"public_pem": public_pem_of(pem),
                                                      "sealed_private_key": sealer.seal(pem)})
    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.alter_column("public_pem", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("sealed_private_key", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("private_pem")

    service_keys = op.create_table(
        "service_keys",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_service_keys")),
    )
    op.bulk_insert(service_keys, [{"name": "cursor", "value": secrets.token_urlsafe(32),
                                   "created_at": datetime.now(timezone.utc)}])

    op.create_table(
        "credential_events",
        sa.Column("seq", PK, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("credential_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_credential_events")),
    )
    op.create_index(op.f("ix_credential_events_at"), "credential_events", ["at"], unique=False)

    for table in ("changes", "rejected_writes"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("client_request_id", sa.String(length=128), nullable=True))


def downgrade() -> None:
    for table in ("changes", "rejected_writes"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("client_request_id")
    op.drop_index(op.f("ix_credential_events_at"), table_name="credential_events")
    op.drop_table("credential_events")
    op.drop_table("service_keys")
    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.add_column(sa.Column("private_pem", sa.Text(), nullable=True))
    _rewrite_keys("sealed_private_key", lambda sealer, sealed: {"private_pem": sealer.open(sealed)})
    with op.batch_alter_table("signing_keys") as batch_op:
        batch_op.alter_column("private_pem", existing_type=sa.Text(), nullable=False)
        batch_op.drop_column("sealed_private_key")
        batch_op.drop_column("public_pem")
