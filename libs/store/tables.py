"""SQLAlchemy tables of the directory store (Core, not ORM: these sit on the hot path).

Every row carries its SCIM app from the first migration on. A resource keeps its whole
SCIM document as JSON text plus the columns clients filter and sort on most; every other
leaf value is flattened into ``resource_values`` so any filter becomes an indexed SQL
``EXISTS`` instead of a scan over documents. Group membership is a table of its own, so a
member add or remove costs one row whatever the size of the group.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
    UniqueConstraint,
)

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL wants BIGINT.
PK = BigInteger().with_variant(Integer(), "sqlite")

KEY_PREFIX = 128
"""Characters of a lower-cased value kept in the indexed ``ci_key`` column (btree entry limits)."""

resources = Table(
    "resources", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("id", String(64), nullable=False),
    Column("external_id", String(1024)),
    # userName of a User, displayName of a Group, and its case-folded form (filters, lookups).
    Column("name", String(1024), nullable=False),
    Column("name_key", String(1024), nullable=False),
    # name_key again where the name must be unique in its app (every userName; a group's
    # displayName where the app's setting says "server"), else NULL: its unique index is
    # what enforces the uniqueness /Schemas publishes (migration 0004).
    Column("unique_name_key", String(1024)),
    Column("display_name", String(1024)),
    Column("active", Boolean),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("doc", Text, nullable=False),
    UniqueConstraint("app", "resource_type", "id"),
    Index(None, "app", "resource_type", "unique_name_key", unique=True),
    Index(None, "app", "resource_type", "name_key"),
    # Indexed, never unique: Entra maps mailNickname to externalId, and it repeats across a
    # tenant's domains (RFC 7643 §3.1 gives externalId no uniqueness).
    Index(None, "app", "resource_type", "external_id"),
    Index(None, "app", "resource_type", "last_modified"),
)

resource_values = Table(
    "resource_values", metadata,
    Column("resource_pk", PK, ForeignKey("resources.pk", ondelete="CASCADE"), nullable=False),
    # Canonical lower-cased path: "emails.value", "name.givenname", "urn:…:user:manager.value".
    Column("path", String(512), nullable=False),
    # Position in a multi-valued attribute, so sub-attributes of one element can be matched together.
    Column("ordinal", Integer, nullable=False),
    Column("str_value", Text),
    Column("ci_value", Text),
    Column("ci_key", String(KEY_PREFIX)),
    Column("num_value", Float),
    Index(None, "path", "ci_key"),
    Index(None, "resource_pk"),
)

members = Table(
    "group_members", metadata,
    Column("group_pk", PK, ForeignKey("resources.pk", ondelete="CASCADE"), primary_key=True),
    Column("member_pk", PK, ForeignKey("resources.pk", ondelete="CASCADE"), primary_key=True),
    Index(None, "member_pk"),
)

applied_writes = Table(
    "applied_writes", metadata,
    # The bus job id: a job that runs twice finds its own row and answers the stored result.
    Column("job_id", String(64), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("result", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    Index(None, "applied_at"),
)

changes = Table(
    "changes", metadata,
    # The audit trail and the outbox of downstream deliveries, written in the write's transaction.
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("op", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("request_id", String(128)),
    Column("at", DateTime(timezone=True), nullable=False),
    # Issue 5 (migration 0003): who wrote it, from where, and how it ended.
    Column("token_name", String(128)),
    Column("client_ip", String(64)),
    Column("outcome", String(64), nullable=False, server_default="ok"),
    # Issue 16 (migration 0005): request_id is ours (the gateway's); this is the client's own.
    Column("client_request_id", String(128)),
    Index(None, "app", "resource_type", "resource_id"),
    Index(None, "at"),
)

# ---- Issue 5: security (migration 0003) ------------------------------------------------

rejected_writes = Table(
    "rejected_writes", metadata,
    # Audit of the writes a worker refused (404, 409, 412 …): never part of the outbox.
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("app", String(64), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("op", String(16), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("request_id", String(128)),
    Column("token_name", String(128)),
    Column("client_ip", String(64)),
    Column("outcome", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("client_request_id", String(128)),  # issue 16 (migration 0005)
    Index(None, "at"),
)

credentials = Table(
    "credentials", metadata,
    # Bearer tokens and OAuth clients of each SCIM app: only a SHA-256 of each secret is kept.
    Column("id", String(64), primary_key=True),
    Column("app", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),  # "token" | "client"
    Column("secret_hash", String(64), nullable=False),
    Column("public_key", Text),  # PEM of an OAuth client that signs RFC 7523 client assertions
    Column("scopes", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("app", "name"),
    UniqueConstraint("secret_hash"),
)

signing_keys = Table(
    "signing_keys", metadata,
    # Keys that sign the OAuth access tokens scimbus issues; published (public half) as JWKS.
    Column("kid", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    # Issue 16 (migration 0005): the public half in clear, for verifying and the JWKS; the
    # private half sealed with the key encryption key (libs/security/key_encryption.py).
    Column("public_pem", Text, nullable=False),
    Column("sealed_private_key", Text, nullable=False),
)

credential_events = Table(
    "credential_events", metadata,
    # Issue 16 (migration 0005): the audit of credentials made and revoked (scimbus tokens):
    # who, when, what; never a secret or its hash.
    Column("seq", PK, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("app", String(64), nullable=False),
    Column("action", String(16), nullable=False),  # "create" | "revoke"
    Column("credential_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("scopes", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("actor", String(128)),  # the operator: user@host of the command
    Index(None, "at"),
)

service_keys = Table(
    "service_keys", metadata,
    # Issue 16 (migration 0005): keys of the service's own, made at migration, shared by every
    # process: "cursor" signs paging cursors (libs/security/cursor_key.py).
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# ---------------------------------------------------------------- issue 4: downstream deliveries
# Per connector and resource, what the target holds (migration 0002). A change ``seq`` is
# handled for a connector once delivered_seq or dead_seq reaches it; the sweeper re-enqueues
# the rest. The cursor lets the sweeper skip the handled prefix of ``changes``.

delivery_state = Table(
    "delivery_state", metadata,
    Column("connector", String(64), primary_key=True),
    Column("app", String(64), primary_key=True),
    Column("resource_type", String(32), primary_key=True),
    Column("resource_id", String(64), primary_key=True),
    Column("delivered_seq", BigInteger, nullable=False),
    Column("delivered_version", Integer, nullable=False),
    # Whether the target holds the resource now (False after a removal).
    Column("present", Boolean, nullable=False),
    # The target's name for it: a row key, a DN, the relay's id; renames and deletes need it.
    Column("remote_id", String(1024)),
    Column("dead_seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # Issue 18 (migration 0006): the retention finds the rows of removed resources by it.
    Index(None, "present", "updated_at"),
)

dead_letters = Table(
    "dead_letters", metadata,
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("connector", String(64), nullable=False),
    Column("app", String(64), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    # Set when an operator re-queued it (scimbus deliveries retry); kept as history.
    Column("retried_at", DateTime(timezone=True)),
    Index(None, "connector", "retried_at"),
)

delivery_log = Table(
    "delivery_log", metadata,
    # Issue 18 (migration 0006): each delivery that brought a target up to change ``seq`` of a
    # resource, and when; a change is delivered at the first such row with seq >= its own
    # (``scimbus audit``). Purged with the changes (libs/store/retention.py).
    Column("pk", PK, primary_key=True, autoincrement=True),
    Column("connector", String(64), nullable=False),
    Column("app", String(64), nullable=False),
    Column("resource_type", String(32), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("outcome", String(16), nullable=False),  # "delivered" | "removed" | "skipped" (out of scope)
    Column("at", DateTime(timezone=True), nullable=False),
    Index(None, "app", "resource_type", "resource_id", "connector", "seq"),
    Index(None, "at"),
)

delivery_cursors = Table(
    "delivery_cursors", metadata,
    Column("connector", String(64), primary_key=True),
    # Every change with seq <= this one is handled for the connector.
    Column("seq", BigInteger, nullable=False),
)
