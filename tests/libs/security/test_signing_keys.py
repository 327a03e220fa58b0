"""OAuth signing keys: public halves cached for verifying, private halves sealed at rest (issue 16)."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import event, select, update

from libs.security import audit, jwt_tokens
from libs.security.jwt_tokens import InvalidToken, SigningKeys, issue_access_token, verify_access_token
from libs.security.key_encryption import KeyEncryptionError, Sealer, new_key
from libs.store.tables import signing_keys

pytestmark = pytest.mark.db

KEK = new_key()
ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _keys(engine, refresh: float = 60, kek: str | None = KEK) -> SigningKeys:
    return SigningKeys(engine, max_age=timedelta(days=30), token_ttl=600, refresh=refresh,
                       sealer=(lambda: Sealer([kek])) if kek else None)


def _issue(keys: SigningKeys) -> str:
    return issue_access_token(keys, app="default", name="hr", client_id="c1", scopes=frozenset({"read"}), ttl=600)


def _forged(kid: str) -> str:
    """A token with our issuer and a published kid, signed with the attacker's own key."""
    now = int(time.time())
    return jwt.encode({"iss": "scimbus", "aud": "scimbus:default", "sub": "x", "client_id": "c1", "scope": "read write",
                       "iat": now, "exp": now + 600}, ATTACKER, algorithm="RS256", headers={"kid": kid})


class PrivateKeyLoads:
    """Counts the private PEMs this module parses (the 20-50 ms a forged token used to cost)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        real = jwt_tokens.serialization.load_pem_private_key

        def counted(*args, **kwargs):
            self.count += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(jwt_tokens.serialization, "load_pem_private_key", counted)


def test_a_forged_token_with_a_published_kid_is_refused_without_touching_a_private_key(engine, monkeypatch):
    signer = _keys(engine)
    genuine = _issue(signer)
    kid = jwt.get_unverified_header(genuine)["kid"]
    with engine.begin() as conn:  # whatever reads a private key from now on fails loudly
        conn.execute(update(signing_keys).values(sealed_private_key="unreadable"))
    verifier = _keys(engine, kek=None)  # a reader: no key encryption key at all
    loads = PrivateKeyLoads(monkeypatch)
    for _ in range(20):
        with pytest.raises(InvalidToken):
            verify_access_token(verifier, _forged(kid), "default", leeway=0)
    assert verify_access_token(verifier, genuine, "default", leeway=0).name == "oauth:hr"
    assert [k["kid"] for k in verifier.jwks()["keys"]] == [kid]
    assert loads.count == 0


def test_the_jwks_and_verification_parse_each_public_key_once_not_per_call(engine, monkeypatch):
    keys = _keys(engine, refresh=0)  # the table is re-read on every call
    token = _issue(keys)
    parsed = []
    real = jwt_tokens.serialization.load_pem_public_key
    monkeypatch.setattr(jwt_tokens.serialization, "load_pem_public_key",
                        lambda *a, **kw: parsed.append(1) or real(*a, **kw))
    first = keys.jwks()
    for _ in range(50):
        assert keys.jwks() == first
        verify_access_token(keys, token, "default", leeway=0)
    assert len(parsed) == 0  # parsed when the key was made, in this process
    keys.rotate()  # a new key: parsed once, the old one kept as it was
    assert len(keys.jwks()["keys"]) == 2 and len(parsed) == 1


def test_every_rotation_is_audited_with_who_asked_for_it(engine):
    keys = _keys(engine)
    first = keys.current()[0]  # the first key, made on demand
    second = keys.rotate(actor="alice@host")
    rotations = [(e.resource_id, e.actor) for e in audit.query(engine) if e.op == "rotate-key"]
    assert rotations == [(first, jwt_tokens.AUTOMATIC), (second, "alice@host")]


def test_made_up_kids_cost_at_most_a_few_queries_a_second(engine):
    keys = _keys(engine)
    _issue(keys)
    queries = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            queries.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    started = time.monotonic()
    for n in range(200):
        with pytest.raises(InvalidToken):
            verify_access_token(keys, _forged(f"made-up-{n}"), "default", leeway=0)
    elapsed = time.monotonic() - started
    event.remove(engine, "before_cursor_execute", count)
    assert len(queries) <= 1 + elapsed / jwt_tokens.MISS_REFRESH


def test_a_private_key_is_stored_sealed_and_opens_only_with_the_key_encryption_key(engine):
    keys = _keys(engine)
    token = _issue(keys)
    with engine.connect() as conn:
        row = conn.execute(select(signing_keys)).one()
    stored = " ".join(str(v) for v in row)
    assert "PRIVATE KEY" not in stored and "PUBLIC KEY" in row.public_pem
    assert jwt_tokens.public_pem_of(Sealer([KEK]).open(row.sealed_private_key)) == row.public_pem
    with pytest.raises(KeyEncryptionError):
        Sealer([new_key()]).open(row.sealed_private_key)
    other = _keys(engine, kek=new_key())  # a front given the wrong key cannot sign ...
    with pytest.raises(KeyEncryptionError):
        _issue(other)
    assert verify_access_token(other, token, "default", leeway=0)  # ... but verifies
    with pytest.raises(KeyEncryptionError):
        _issue(_keys(engine, kek=None))


def test_a_second_key_encryption_key_opens_what_the_first_one_sealed(engine):
    old, new = new_key(), new_key()
    _issue(_keys(engine, kek=old))
    rotating = SigningKeys(engine, max_age=timedelta(days=30), token_ttl=600, refresh=0,
                           sealer=lambda: Sealer([new, old]))
    assert verify_access_token(rotating, _issue(rotating), "default", leeway=0)


@pytest.fixture(params=["sqlite", "postgresql"])
def url_at_0003(request, tmp_path):
    """A database as issue 5 left it: signing keys stored as plaintext PEMs."""
    from libs.store.migrate import upgrade
    from tests.services.conftest import _fresh_schema

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'scimbus.db'}"
    else:
        url = _fresh_schema(request.getfixturevalue("postgres_url"))
    upgrade(url, "0003")
    return url


def test_the_migration_seals_plaintext_signing_keys_and_their_tokens_stay_valid(url_at_0003, tmp_path):
    from sqlalchemy import text

    from libs.config import load_settings
    from libs.security.credentials import utcnow
    from libs.store.migrate import downgrade, upgrade
    from libs.store.session import create_engine_from_url

    pem = jwt_tokens.new_private_pem()
    now = int(time.time())
    token = jwt.encode({"iss": "scimbus", "aud": "scimbus:default", "sub": "hr", "client_id": "c1", "scope": "read",
                        "iat": now, "exp": now + 600}, pem, algorithm="RS256", headers={"kid": "old-kid"})
    engine = create_engine_from_url(url_at_0003)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO signing_keys (kid, private_pem, created_at) VALUES ('old-kid', :pem, :at)"),
                     {"pem": pem, "at": utcnow()})
    with pytest.raises(KeyEncryptionError):  # no key: the plaintext keys are left as they are, not lost
        upgrade(url_at_0003, settings=load_settings({"SCIM_VAR_DIR": str(tmp_path)}))
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_KEY_ENCRYPTION_KEY": KEK})
    upgrade(url_at_0003, settings=settings)
    with engine.connect() as conn:
        row = conn.execute(select(signing_keys)).one()
    assert "PRIVATE KEY" not in row.sealed_private_key and Sealer([KEK]).open(row.sealed_private_key) == pem
    keys = _keys(engine)
    assert verify_access_token(keys, token, "default", leeway=0).name == "oauth:hr"
    assert keys.current()[0] == "old-kid"  # and it still signs
    downgrade(url_at_0003, "0003", settings=settings)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT private_pem FROM signing_keys")).scalar_one() == pem
    engine.dispose()
