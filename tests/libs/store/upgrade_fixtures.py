"""What a database at each Alembic revision held: one data fixture per revision.

Each fixture writes a small directory the way that revision's tables took it: rows are
inserted through the tables *reflected from the database* at that revision, so a column a
later migration added cannot slip in (and one it dropped, like 0003's plaintext
``signing_keys.private_pem``, must be filled). The rows cover every table of the revision:
users with the enterprise extension and a manager, a group with members, values, the
outbox and idempotency records, delivery ledger and dead letters (0002), credentials,
signing keys and the audit columns (0003), repeated externalIds and group names (0004),
sealed signing keys and credential events (0005).

``expected(revision)`` says what reads back after the upgrade to head.

A new migration needs an entry in ``FIXTURES`` (tests/libs/store/test_upgrades.py fails
without one): a revision that changes no table may reuse the fixture of the one before it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from cryptography.fernet import Fernet
from sqlalchemy import Connection, MetaData, Table

from libs.scim.schemas import ENTERPRISE_USER, GROUP, GROUPS, USER, USERS
from libs.security.credentials import hash_secret
from libs.security.jwt_tokens import new_private_pem, public_pem_of
from libs.security.key_encryption import Sealer
from libs.store.values import flatten

KEY_ENCRYPTION_KEY = Fernet.generate_key().decode()
"""The key 0005 seals the signing keys of older databases with (SCIM_KEY_ENCRYPTION_KEY)."""
TOKEN = "upgrade-token-" + "u" * 24
"""A bearer token stored in ``credentials`` (0003 on): the reader must still accept it."""
CONNECTOR = "hook"
T0 = datetime(2025, 3, 4, 5, 6, 7, tzinfo=timezone.utc)


def _id(n: int) -> str:
    return str(uuid.UUID(int=n))


ADELE, BOB, CAROL, MARKETING, MARKETING_2 = _id(1), _id(2), _id(3), _id(11), _id(12)


@dataclass
class Resource:
    id: str
    resource_type: str
    doc: dict[str, Any]
    version: int
    members: list[str] = field(default_factory=list)
    unique_name: bool = True


@dataclass
class Expected:
    """What the upgraded database must answer."""

    resources: dict[str, Resource]
    rows: dict[str, int]
    """Rows per table that the revision had (and so the fixture filled)."""
    token: str | None
    signing_kid: str | None
    pending: dict[tuple[str, str], int]
    """The hook connector's pending deliveries: (resource type, id) -> newest seq."""


def _resources(revision_number: int) -> list[Resource]:
    adele = {"schemas": [USER, ENTERPRISE_USER], "userName": "Adele.Vance@contoso.example", "externalId": "adele",
             "active": True, "displayName": "Adele Vance", "title": "Engineer",
             "name": {"givenName": "Adele", "familyName": "Vance"},
             "emails": [{"value": "adele.vance@contoso.example", "type": "work", "primary": True}],
             ENTERPRISE_USER: {"department": "Eng", "employeeNumber": "1001"}}
    bob = {"schemas": [USER, ENTERPRISE_USER], "userName": "bob@contoso.example", "externalId": "bob",
           "active": False, "name": {"givenName": "Bob", "familyName": "Kelly"},
           ENTERPRISE_USER: {"department": "Sales", "manager": {"value": ADELE}}}
    out = [Resource(ADELE, "User", adele, 3), Resource(BOB, "User", bob, 1),
           Resource(MARKETING, "Group", {"schemas": [GROUP], "displayName": "Marketing", "externalId": "mkt"}, 2,
                    # Before 0004 every name was unique, and 0004 kept each one bound to be.
                    members=[ADELE, BOB], unique_name=revision_number < 4)]
    if revision_number >= 4:  # what 0004 allowed: an externalId again, a group name again
        carol = {"schemas": [USER], "userName": "carol@fabrikam.example", "externalId": "adele", "active": True}
        out += [Resource(CAROL, "User", carol, 1),
                Resource(MARKETING_2, "Group", {"schemas": [GROUP], "displayName": "Marketing"}, 1,
                         members=[CAROL], unique_name=False)]
    return out


def _table(conn: Connection, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=conn)


def _insert(conn: Connection, name: str, rows: list[dict[str, Any]]) -> list[Any]:
    table = _table(conn, name)
    unknown = {k for row in rows for k in row} - set(table.c.keys())
    assert not unknown, f"the fixture writes columns {unknown} that {name} does not have at this revision"
    return [conn.execute(table.insert().values(**row)).inserted_primary_key for row in rows]


def fill(conn: Connection, revision_number: int) -> Expected:
    """The directory as a release at ``revision_number`` (1 for 0001, …) wrote it."""
    rows: dict[str, int] = {}

    def insert(name: str, batch: list[dict[str, Any]]) -> list[Any]:
        rows[name] = rows.get(name, 0) + len(batch)
        return _insert(conn, name, batch)

    resources = _resources(revision_number)
    pks: dict[str, int] = {}
    for r in resources:
        schema = USERS if r.resource_type == "User" else GROUPS
        name = r.doc["userName"] if r.resource_type == "User" else r.doc["displayName"]
        row = {"app": "default", "resource_type": r.resource_type, "id": r.id, "external_id": r.doc.get("externalId"),
               "name": name, "name_key": name.lower(), "display_name": r.doc.get("displayName"),
               "active": r.doc.get("active") if r.resource_type == "User" else None,
               "created": T0, "last_modified": T0 + timedelta(minutes=r.version), "version": r.version,
               "doc": json.dumps(r.doc)}
        if revision_number >= 4:
            row["unique_name_key"] = name.lower() if r.unique_name else None
        pks[r.id] = insert("resources", [row])[0][0]
        values = flatten(r.doc, schema)
        if values:
            insert("resource_values", [{"resource_pk": pks[r.id], **v} for v in values])
    insert("group_members", [{"group_pk": pks[r.id], "member_pk": pks[m]} for r in resources for m in r.members])

    changes, applied = [], []
    for n, r in enumerate(resources):
        for version in range(1, r.version + 1):
            job = f"job-{n}-{version}"
            change = {"app": "default", "resource_type": r.resource_type, "resource_id": r.id,
                      "op": "create" if version == 1 else "replace", "version": version, "job_id": job,
                      "request_id": f"req-{n}-{version}", "at": T0 + timedelta(minutes=version)}
            if revision_number >= 3:
                change.update(token_name="entra", client_ip="10.0.0.7", outcome="ok")
            if revision_number >= 5:
                change["client_request_id"] = f"client-{n}-{version}"
            changes.append(change)
            applied.append({"job_id": job, "app": "default", "result": json.dumps({"status": 201, "id": r.id}),
                            "applied_at": T0 + timedelta(minutes=version)})
    seqs = [k[0] for k in insert("changes", changes)]
    insert("applied_writes", applied)
    newest = {}
    for change, seq in zip(changes, seqs):
        newest[(change["resource_type"], change["resource_id"])] = seq

    pending = dict(newest)
    if revision_number >= 2:
        # The hook has Adele delivered; Bob's change was dead-lettered; the rest are pending.
        adele_seq, bob_seq = newest[("User", ADELE)], newest[("User", BOB)]
        insert("delivery_state", [
            {"connector": CONNECTOR, "app": "default", "resource_type": "User", "resource_id": ADELE,
             "delivered_seq": adele_seq, "delivered_version": 3, "present": True, "remote_id": "remote-adele",
             "dead_seq": 0, "attempts": 0, "last_error": None, "next_attempt_at": None, "updated_at": T0},
            {"connector": CONNECTOR, "app": "default", "resource_type": "User", "resource_id": BOB,
             "delivered_seq": 0, "delivered_version": 0, "present": False, "remote_id": None,
             "dead_seq": bob_seq, "attempts": 5, "last_error": "503 Service Unavailable",
             "next_attempt_at": None, "updated_at": T0}])
        insert("dead_letters", [{"connector": CONNECTOR, "app": "default", "resource_type": "User",
                                 "resource_id": BOB, "seq": bob_seq, "version": 1,
                                 "reason": "503 Service Unavailable", "attempts": 5, "at": T0, "retried_at": None}])
        insert("delivery_cursors", [{"connector": CONNECTOR, "seq": 0}])
        if revision_number >= 6:  # 0006 logs each delivery
            insert("delivery_log", [{"connector": CONNECTOR, "app": "default", "resource_type": "User",
                                     "resource_id": ADELE, "seq": adele_seq, "outcome": "delivered", "at": T0}])
        del pending[("User", ADELE)], pending[("User", BOB)]

    token = kid = None
    if revision_number >= 3:
        token, kid = TOKEN, "kid-" + "k" * 12
        insert("credentials", [{"id": "cred-1", "app": "default", "name": "entra", "kind": "token",
                                "secret_hash": hash_secret(TOKEN), "public_key": None, "scopes": "read write",
                                "created_at": T0, "expires_at": None, "revoked_at": None}])
        insert("rejected_writes", [{"app": "default", "resource_type": "User", "resource_id": _id(99), "op": "patch",
                                    "job_id": "job-rejected", "request_id": "req-rejected", "token_name": "entra",
                                    "client_ip": "10.0.0.7", "outcome": "404", "at": T0,
                                    **({"client_request_id": "client-rejected"} if revision_number >= 5 else {})}])
        private = new_private_pem()
        key = {"kid": kid, "created_at": datetime.now(timezone.utc), "retired_at": None}
        if revision_number >= 5:
            key.update(public_pem=public_pem_of(private),
                       sealed_private_key=Sealer([KEY_ENCRYPTION_KEY]).seal(private))
        else:
            key["private_pem"] = private  # 0005 seals it
        insert("signing_keys", [key])
    if revision_number >= 5:
        insert("credential_events", [{"at": T0, "app": "default", "action": "create", "credential_id": "cred-1",
                                      "name": "entra", "kind": "token", "scopes": "read write", "expires_at": None,
                                      "actor": "admin@host"}])
    return Expected({r.id: r for r in resources}, rows, token, kid, pending)


def at(revision_number: int) -> Callable[[Connection], Expected]:
    return lambda conn: fill(conn, revision_number)
