"""Credentials in the database: hashes only, rotation, revocation, expiry (issue 5)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from libs.security.credentials import (
    CredentialAdmin, CredentialCache, CredentialError, hash_secret, parse_scopes,
)

pytestmark = pytest.mark.db


def test_a_created_token_is_found_by_its_secret_and_only_its_hash_is_stored(engine):
    cred, secret = CredentialAdmin(engine).create("default", "entra", scopes=frozenset({"read"}))
    assert cred.secret_hash == hash_secret(secret) and secret not in repr(cred)
    cache = CredentialCache(engine, refresh=60)
    found = cache.find(secret)
    assert found is not None and found.name == "entra" and found.scopes == {"read"}
    assert cache.find(secret + "x") is None
    assert cache.find(secret, kind="client") is None  # a token is not a client secret


def test_a_revoked_token_is_refused_once_the_cache_refreshes(engine):
    admin = CredentialAdmin(engine)
    _, old = admin.create("default", "old")
    _, new = admin.create("default", "new")
    cache = CredentialCache(engine, refresh=0.2)
    assert cache.find(old) and cache.find(new)  # two valid at once
    admin.revoke("default", "old")
    time.sleep(0.25)
    assert cache.find(old) is None and cache.find(new) is not None
    with pytest.raises(CredentialError):
        admin.revoke("default", "old")


def test_an_expired_token_is_refused(engine):
    _, secret = CredentialAdmin(engine).create("default", "brief", expires_in=timedelta(seconds=-1))
    assert CredentialCache(engine, refresh=60).find(secret) is None


def test_names_are_unique_per_app_only(engine):
    admin = CredentialAdmin(engine)
    admin.create("default", "entra")
    admin.create("acme", "entra")
    with pytest.raises(CredentialError):
        admin.create("acme", "entra")


def test_the_bootstrap_token_belongs_to_the_default_app(engine):
    cache = CredentialCache(engine, refresh=60, bootstrap=CredentialCache.bootstrap_tokens(("boot",), "default"))
    found = cache.find("boot")
    assert found is not None and found.app == "default" and found.name == "bootstrap"


@pytest.mark.parametrize("raw", ["", "admin", "read,delete"])
def test_unknown_scopes_are_refused(raw):
    with pytest.raises(CredentialError):
        parse_scopes(raw)


def test_making_and_revoking_a_credential_is_audited_with_its_operator_and_no_secret(engine):
    from libs.security import audit

    admin = CredentialAdmin(engine)
    cred, secret = admin.create("acme", "entra", kind="client", actor="alice@admin-host")
    admin.revoke("acme", "entra", actor="bob@admin-host")
    with pytest.raises(CredentialError):
        admin.revoke("acme", "entra", actor="bob@admin-host")  # nothing revoked: nothing audited
    entries = list(audit.query(engine, token_name="entra"))
    assert [(e.op, e.actor, e.app, e.resource_id) for e in entries] == [
        ("create", "alice@admin-host", "acme", cred.id), ("revoke", "bob@admin-host", "acme", cred.id)]
    assert entries[0].detail == "client scopes=read write" and entries[0].resource_type == "Credential"
    shown = repr([e.as_dict() for e in entries])
    assert secret not in shown and hash_secret(secret) not in shown
    assert list(audit.query(engine, token_name="entra", outcome="rejected")) == []
    assert audit.purge(engine, retention_days=1) == 0  # young events stay
