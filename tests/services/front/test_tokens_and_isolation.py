"""Credentials over HTTP: per-app tokens with scopes, rotation without restart, OAuth client
credentials, and no way for one app's credential to reach another app's data (issue 5)."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.services.conftest import unique
from tests.services.test_entra_flows import GROUP, assert_scim_error, create_group, create_user, entra_user, patch

pytestmark = pytest.mark.stack

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def _wait_until(predicate, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.2)
    return time.monotonic() - started


def _status(stack, token: str, method: str = "GET", path: str = "/Users", **kw) -> int:
    with stack.client(token) as c:
        return c.request(method, path, **kw).status_code


# --------------------------------------------------------------------------- bearer tokens


def test_a_missing_or_wrong_token_is_401_on_every_endpoint(stack):
    with httpx.Client(base_url=stack.url, timeout=30) as anonymous, stack.client("scimbus_" + "x" * 43) as wrong:
        for client in (anonymous, wrong):
            for method, path in (("GET", "/Users"), ("GET", "/Users/x"), ("POST", "/Users"), ("PUT", "/Users/x"),
                                 ("PATCH", "/Groups/x"), ("DELETE", "/Groups/x"), ("POST", "/Users/.search"),
                                 ("GET", "/Schemas"), ("GET", "/ServiceProviderConfig"), ("GET", "/acme/Users")):
                response = client.request(method, path, json={})
                body = assert_scim_error(response, 401)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
                assert "scimbus_" not in body["detail"]


def test_two_tokens_work_during_a_rotation_and_the_revoked_one_stops_without_a_restart(stack):
    name = unique("rot")
    old = json.loads(stack.scimbus("tokens", "create", f"{name}-old").stdout)["token"]
    new = json.loads(stack.scimbus("tokens", "create", f"{name}-new", "--scopes", "read,write").stdout)["token"]
    assert old.startswith("scimbus_") and old != new
    assert _status(stack, old) == 200 and _status(stack, new) == 200  # both valid during the overlap
    stack.scimbus("tokens", "revoke", f"{name}-old")
    waited = _wait_until(lambda: _status(stack, old) == 401, timeout=10)
    assert waited < 5  # SCIM_TOKEN_REFRESH (2 s) per process, no restart
    assert _status(stack, new) == 200
    listing = stack.scimbus("tokens", "list").stdout
    assert f"{name}-old" in listing and "revoked" in listing and old not in listing and new not in listing


def test_making_and_revoking_a_token_is_audited_with_who_did_it_and_no_secret(stack):
    """An operator who makes himself a token, uses it and revokes it leaves a trace."""
    import getpass
    import socket

    name = unique("audited-token")
    token = json.loads(stack.scimbus("tokens", "create", name, "--scopes", "read").stdout)["token"]
    stack.scimbus("tokens", "revoke", name)
    shown = stack.scimbus("audit", "--json", "--token", name).stdout
    entries = [json.loads(line) for line in shown.splitlines()]
    assert [(e["op"], e["resource_type"], e["detail"]) for e in entries] == [
        ("create", "Credential", "token scopes=read"), ("revoke", "Credential", "token scopes=read")]
    assert all(e["actor"] == f"{getpass.getuser()}@{socket.gethostname()}" for e in entries)
    assert token not in shown and token[8:] not in shown
    assert "by=" in stack.scimbus("audit", "--token", name).stdout


def test_the_credentials_table_keeps_only_hashes(stack):
    secret = stack.create_token(unique("hashed"))["token"]
    from sqlalchemy import create_engine, text

    from libs.config import load_settings

    engine = create_engine(load_settings(stack.env).database)
    with engine.connect() as conn:
        dump = json.dumps([list(map(str, r)) for r in conn.execute(text("SELECT * FROM credentials"))])
    engine.dispose()
    assert secret not in dump and secret[8:] not in dump


def test_the_signing_keys_table_holds_no_private_key_in_clear(stack):
    """A copy of the database (a backup, a replica) must not let anyone sign access tokens."""
    from sqlalchemy import create_engine, text

    from libs.config import load_settings

    client = stack.create_token(unique("oauth"), client=True)
    assert _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                  client_secret=client["client_secret"]).status_code == 200  # a signing key exists
    settings = load_settings(stack.env)
    engine = create_engine(settings.database)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM signing_keys")).all()
    engine.dispose()
    assert rows and not any("PRIVATE KEY" in str(value) for row in rows for value in row)
    # The local run's key (var/key-encryption-key, mode 600) opens them.
    from libs.security.key_encryption import Sealer

    assert (stack.var_dir / "key-encryption-key").stat().st_mode & 0o777 == 0o600
    assert all("PRIVATE KEY" in Sealer.from_settings(settings).open(row.sealed_private_key) for row in rows)


def test_a_read_only_token_reads_and_gets_403_on_writes(stack):
    token = stack.create_token(unique("ro"), None, "read")["token"]
    with stack.client(token) as c:
        assert c.get("/Users").status_code == 200
        assert c.post("/Users/.search", json={"schemas": [SEARCH]}).status_code == 200
        assert_scim_error(c.post("/Users", json=entra_user()), 403)
        assert_scim_error(c.delete(f"/Users/{uuid.uuid4()}"), 403)


def test_an_expired_token_is_401(stack):
    token = stack.create_token(unique("short"), expires_days=0.00002)["token"]  # 1.7 s
    _wait_until(lambda: _status(stack, token) == 401, timeout=10)


def test_a_write_is_audited_with_the_token_name_and_client_ip_and_a_refused_one_too(stack):
    name = unique("audited")
    token = stack.create_token(name)["token"]
    with stack.client(token) as c:
        user = create_user(c)
        assert_scim_error(c.post("/Users", json=entra_user(user["userName"])), 409)
    entries = [json.loads(line) for line in stack.scimbus("audit", "--json", "--token", name).stdout.splitlines()]
    made, *entries = entries  # the token's own creation comes first
    assert (made["op"], made["resource_type"]) == ("create", "Credential")
    assert [(e["op"], e["outcome"]) for e in entries] == [("create", "ok"), ("create", "409 uniqueness")]
    assert entries[0]["resource_id"] == user["id"] and entries[0]["client_ip"] == "127.0.0.1"
    assert all(e["request_id"] for e in entries)
    by_user = stack.scimbus("audit", "--json", "--user", user["id"]).stdout
    assert name in by_user and token not in by_user
    rejected = stack.scimbus("audit", "--json", "--token", name, "--outcome", "rejected").stdout.splitlines()
    assert len(rejected) == 1
    assert stack.scimbus("audit", "--json", "--token", name, "--since", "2999-01-01").stdout == ""


def test_a_client_cannot_choose_the_request_id_of_its_audit_row_and_its_own_is_kept_beside_ours(stack):
    """A client's X-Request-Id (one of another request's, or a lie) never becomes the audit's id."""
    name = unique("request-ids")
    token = stack.create_token(name)["token"]
    with stack.client(token) as c:
        sent = c.post("/Users", json=entra_user(), headers={"X-Request-Id": "0123456789abcdef0123456789abcdef"})
        refused = c.delete(f"/Users/{uuid.uuid4()}", headers={"X-Request-Id": "not-even-hex; see log"})
    assert sent.status_code == 201 and refused.status_code == 404
    ours = [sent.headers["X-Request-Id"], refused.headers["X-Request-Id"]]
    assert "0123456789abcdef0123456789abcdef" not in ours and all(len(i) == 32 for i in ours)
    entries = [json.loads(line) for line in stack.scimbus("audit", "--json", "--token", name).stdout.splitlines()
               if json.loads(line)["resource_type"] == "User"]
    assert [(e["request_id"], e["client_request_id"]) for e in entries] == [
        (ours[0], "0123456789abcdef0123456789abcdef"), (ours[1], "not-even-hex; see log")]
    assert "client-request=0123456789abcdef0123456789abcdef" in stack.scimbus("audit", "--token", name).stdout


def test_a_bulk_write_is_audited_with_the_token_name_and_client_ip_as_a_single_write_is(stack):
    """A Bulk of writes must not let a client write without leaving its name in the audit."""
    name = unique("bulk-audited")
    token = stack.create_token(name)["token"]
    taken = create_user(stack.client())["userName"]
    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "a", "data": entra_user()},
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": entra_user(taken)},
    ]}
    with stack.client(token) as c:
        answer = c.post("/Bulk", json=body)
    assert answer.status_code == 200, answer.text
    assert [op["status"] for op in answer.json()["Operations"]] == ["201", "409"]
    entries = [json.loads(line) for line in stack.scimbus("audit", "--json", "--token", name).stdout.splitlines()
               if json.loads(line)["resource_type"] == "User"]
    assert sorted((e["op"], e["outcome"]) for e in entries) == [("create", "409 uniqueness"), ("create", "ok")]
    assert all(e["token_name"] == name and e["client_ip"] == "127.0.0.1" and e["request_id"] for e in entries)


# --------------------------------------------------------------------------- isolation of apps


def _every_endpoint(prefix: str, user_id: str, group_id: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", f"{prefix}/Users", None), ("GET", f"{prefix}/Users/{user_id}", None),
        ("GET", f"{prefix}/Groups/{group_id}", None), ("POST", f"{prefix}/Users", entra_user()),
        ("PUT", f"{prefix}/Users/{user_id}", entra_user()),
        ("PATCH", f"{prefix}/Users/{user_id}", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                                "Operations": [{"op": "replace", "path": "active", "value": False}]}),
        ("DELETE", f"{prefix}/Groups/{group_id}", None), ("POST", f"{prefix}/Users/.search", {"schemas": [SEARCH]}),
        ("POST", f"{prefix}/Bulk", {}), ("GET", f"{prefix}/Schemas", None), ("GET", f"{prefix}/ResourceTypes", None),
        ("GET", f"{prefix}/ServiceProviderConfig", None),
    ]


def test_a_token_of_one_app_gets_401_for_everything_of_another(stack, scim, acme):
    user, group = create_user(scim), create_group(scim)
    acme_user = acme.post("/acme/Users", json=entra_user()).json()
    for method, path, body in _every_endpoint("", user["id"], group["id"]):
        assert_scim_error(acme.request(method, path, json=body), 401)
    for method, path, body in _every_endpoint("/acme", acme_user["id"], group["id"]):
        assert_scim_error(scim.request(method, path, json=body), 401)
    assert scim.get(f"/Users/{user['id']}").json()["active"] is True  # nothing changed
    assert scim.get(f"/Groups/{group['id']}").status_code == 200


def test_ids_and_filters_of_one_app_find_nothing_in_another(scim, acme):
    user = create_user(scim)
    assert_scim_error(acme.get(f"/acme/Users/{user['id']}"), 404)
    assert_scim_error(acme.delete(f"/acme/Users/{user['id']}"), 404)
    assert_scim_error(patch(acme, f"/acme/Users/{user['id']}", {"op": "replace", "path": "active", "value": False}),
                      404)
    for filter_text in (f'id eq "{user["id"]}"', f'userName eq "{user["userName"]}"',
                        f'externalId eq "{user["externalId"]}"'):
        listed = acme.get("/acme/Users", params={"filter": filter_text}).json()
        assert listed["totalResults"] == 0
        searched = acme.post("/acme/Users/.search", json={"schemas": [SEARCH], "filter": filter_text}).json()
        assert searched["totalResults"] == 0
    group = acme.post("/acme/Groups", json={"schemas": [GROUP], "displayName": unique("g")}).json()
    assert_scim_error(acme.post("/acme/Groups", json={"schemas": [GROUP], "displayName": unique("g"),
                                                      "members": [{"value": user["id"]}]}), 400)
    assert acme.get(f"/acme/Groups/{group['id']}").json().get("members", []) == []
    assert scim.get(f"/Users/{user['id']}").json()["active"] is True


# --------------------------------------------------------------------------- OAuth 2.0 client credentials


def _oauth(stack, **form) -> httpx.Response:
    with httpx.Client(base_url=stack.url.removesuffix("/scim"), timeout=30) as c:
        return c.post("/oauth/token", data=form)


def test_an_oauth_client_gets_a_short_lived_signed_token_for_its_app_only(stack):
    client = stack.create_token(unique("oauth"), "acme", client=True)
    response = _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                      client_secret=client["client_secret"])
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600
    assert response.headers["Cache-Control"] == "no-store"
    with httpx.Client(base_url=stack.url.removesuffix("/scim"), timeout=30) as c:
        jwks = c.get("/oauth/jwks").json()
    header = jwt.get_unverified_header(answer["access_token"])
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert "d" not in key  # the public half only
    claims = jwt.decode(answer["access_token"], jwt.PyJWK(key).key, algorithms=["RS256"], audience="scimbus:acme")
    assert claims["exp"] - claims["iat"] == 600
    assert _status(stack, answer["access_token"], path="/acme/Users") == 200
    assert _status(stack, answer["access_token"], path="/Users") == 401  # another app
    tampered = answer["access_token"][:-4] + ("AAAA" if not answer["access_token"].endswith("AAAA") else "BBBB")
    assert _status(stack, tampered, path="/acme/Users") == 401


def test_a_revoked_oauth_clients_access_token_stops_working_within_the_credentials_refresh(stack):
    """Not at its expiry (SCIM_ACCESS_TOKEN_TTL, 600 s): a leaked client is cut off by revoking it."""
    name = unique("revoked-client")
    client = stack.create_token(name, client=True)
    access = _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                    client_secret=client["client_secret"]).json()["access_token"]
    read_and_write = (("GET", "/Users"), ("DELETE", f"/Users/{uuid.uuid4()}"))  # reader, front
    assert [_status(stack, access, *call) for call in read_and_write] == [200, 404]
    stack.scimbus("tokens", "revoke", name)
    waited = _wait_until(lambda: [_status(stack, access, *call) for call in read_and_write] == [401, 401], timeout=10)
    assert waited < 5  # SCIM_TOKEN_REFRESH (2 s) per process, as for a bearer token
    time.sleep(2.5)  # by now every process of both has refreshed
    assert {_status(stack, access, *call) for _ in range(4) for call in read_and_write} == {401}


def test_a_forged_token_with_a_published_kid_is_refused_without_reading_a_private_key(stack):
    """Issue 16: a token with our issuer and a published kid made the server parse a stored
    private key (20-50 ms of CPU, unauthenticated) before it checked the signature. Here every
    private key in the database is unreadable: a request that still reads one answers 500."""
    from sqlalchemy import create_engine, inspect, text

    from libs.config import load_settings

    client = stack.create_token(unique("oauth"), client=True)
    genuine = _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                     client_secret=client["client_secret"]).json()["access_token"]
    kid = jwt.get_unverified_header(genuine)["kid"]
    now = int(time.time())
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"iss": "scimbus", "aud": "scimbus:default", "sub": "x", "client_id": client["client_id"],
                         "scope": "read write", "iat": now, "exp": now + 600}, attacker, algorithm="RS256",
                        headers={"kid": kid})
    engine = create_engine(load_settings(stack.env).database)
    private = [c["name"] for c in inspect(engine).get_columns("signing_keys") if "private" in c["name"]]
    with engine.begin() as conn:
        saved = conn.execute(text(f"SELECT kid, {', '.join(private)} FROM signing_keys")).all()
        conn.execute(text(f"UPDATE signing_keys SET {', '.join(f'{c} = :x' for c in private)}"), {"x": "unreadable"})
    try:
        time.sleep(2.5)  # every process has re-read the table (SCIM_TOKEN_REFRESH)
        for _ in range(3):  # both processes of the reader and of the front
            assert _status(stack, forged) == 401
            assert _status(stack, forged, "DELETE", f"/Users/{uuid.uuid4()}") == 401
            assert _status(stack, genuine) == 200
        with httpx.Client(base_url=stack.url.removesuffix("/scim"), timeout=30) as c:
            assert kid in [k["kid"] for k in c.get("/oauth/jwks").json()["keys"]]
    finally:
        with engine.begin() as conn:
            for row in saved:
                conn.execute(text(f"UPDATE signing_keys SET {', '.join(f'{c} = :{c}' for c in private)} "
                                  "WHERE kid = :kid"), dict(row._mapping))
        engine.dispose()


def test_the_token_endpoint_refuses_wrong_secrets_grants_and_scopes(stack):
    client = stack.create_token(unique("oauth"), None, "read", client=True)
    wrong = _oauth(stack, grant_type="client_credentials", client_id=client["client_id"], client_secret="nope")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    grant = _oauth(stack, grant_type="password", client_id=client["client_id"], client_secret=client["client_secret"])
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    scope = _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                   client_secret=client["client_secret"], scope="write")
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"
    ok = _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                client_secret=client["client_secret"]).json()
    assert _status(stack, ok["access_token"]) == 200
    assert _status(stack, ok["access_token"], "POST", "/Users", json=entra_user()) == 403
    token = stack.create_token(unique("plain"))["token"]  # a bearer token is not a client secret
    assert _oauth(stack, grant_type="client_credentials", client_id=client["client_id"],
                  client_secret=token).status_code == 401


def test_a_client_assertion_signed_with_the_clients_key_is_accepted_once(stack, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "client.pub.pem"
    pem.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    created = stack.scimbus("tokens", "create", unique("assert"), "--public-key", str(pem)).stdout
    client = json.loads(created)
    assert client["kind"] == "client" and client["client_secret"]
    endpoint = stack.url.removesuffix("/scim") + "/oauth/token"
    now = int(time.time())
    claims = {"iss": client["client_id"], "sub": client["client_id"], "aud": endpoint, "iat": now,
              "exp": now + 120, "jti": uuid.uuid4().hex}
    assertion = jwt.encode(claims, key, algorithm="RS256")
    form = {"grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    first = _oauth(stack, **form)
    assert first.status_code == 200, first.text
    assert _status(stack, first.json()["access_token"]) == 200
    assert _oauth(stack, **form).status_code == 401  # replayed jti
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({**claims, "jti": uuid.uuid4().hex}, other, algorithm="RS256")
    assert _oauth(stack, **{**form, "client_assertion": forged}).status_code == 401
    wrong_aud = jwt.encode({**claims, "jti": uuid.uuid4().hex, "aud": "https://elsewhere/token"}, key,
                           algorithm="RS256")
    assert _oauth(stack, **{**form, "client_assertion": wrong_aud}).status_code == 401


def test_a_client_assertion_made_for_another_server_is_refused_whatever_host_the_request_names(stack, tmp_path):
    """The audience is SCIM_PUBLIC_URL's token endpoint, never the Host or X-Forwarded-Host the
    client sends: an assertion the client signed for another server cannot be replayed here."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    client = stack.create_token(unique("assert"), public_key=public.decode())
    now = int(time.time())
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    with httpx.Client(base_url=stack.url.removesuffix("/scim"), timeout=30) as c:
        for headers in ({"X-Forwarded-Host": "idp.other.example"}, {"Host": "idp.other.example"}):
            meant_elsewhere = jwt.encode({"iss": client["client_id"], "sub": client["client_id"], "iat": now,
                                          "exp": now + 120, "jti": uuid.uuid4().hex,
                                          "aud": "http://idp.other.example/oauth/token"}, key, algorithm="RS256")
            refused = c.post("/oauth/token", data={**form, "client_assertion": meant_elsewhere}, headers=headers)
            assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", headers
            assert stack.url.removesuffix("/scim") + "/oauth/token" in refused.json()["error_description"]
