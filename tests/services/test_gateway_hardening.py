"""A stack started with TLS, rate limiting and Entra-issued JWTs turned on (issue 5).

One SQLite stack for the module: what is tested here is the gateway and the credential
checks, which do not depend on the directory's database.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
import uuid
import warnings

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.security.jwt_tokens import ENTRA_AUDIENCE
from tests.services.conftest import unique
from tests.services.test_entra_flows import assert_scim_error, entra_user
from tests.support.certs import issue_client, make_ca
from tests.support.stack import running_stack

pytestmark = pytest.mark.stack

TENANT = str(uuid.uuid4())
PROVISIONING_APP = str(uuid.uuid4())
"""The Entra application id of the provisioning app this stack accepts JWTs from."""
RATE_LIMIT = 15


@pytest.fixture(scope="module")
def entra_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def hardened(tmp_path_factory, entra_key):
    tmp = tmp_path_factory.mktemp("hardened")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(entra_key.public_key()))
    (tmp / "entra-jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "entra-1", "use": "sig"}]}))
    env = {"SCIM_TLS": "1", "SCIM_RATE_LIMIT": str(RATE_LIMIT), "SCIM_RATE_WINDOW": "60",
           "SCIM_ENTRA_TENANT_ID": TENANT, "SCIM_ENTRA_JWKS": str(tmp / "entra-jwks.json"),
           "SCIM_ENTRA_CALLERS": PROVISIONING_APP}
    with running_stack(tmp, workers=1, extra_env=env) as stack:
        yield stack


# --------------------------------------------------------------------------- TLS


def _handshake(port: int, version: ssl.TLSVersion, ciphers: str | None = None) -> str:
    """The protocol a client limited to ``version`` negotiates, or raises ssl.SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    # Debian's OpenSSL refuses TLS 1.0/1.1 and SHA-1 at its default security level: level 0
    # lets this client really offer them, so a refusal can only come from the server.
    ctx.set_ciphers(ciphers or "ALL:@SECLEVEL=0")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        return tls.version()


@pytest.fixture(scope="module")
def permissive_server(hardened):
    """A TLS server that accepts every version: proof the client above can speak TLS 1.0/1.1."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(hardened.var_dir / "tls" / "cert.pem", hardened.var_dir / "tls" / "key.pem")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_the_gateway_refuses_tls_1_0_and_1_1(hardened, permissive_server, version):
    assert _handshake(permissive_server, version) == {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}[version.name]
    with pytest.raises(ssl.SSLError):
        _handshake(hardened.port, version)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_the_gateway_accepts_tls_1_2_and_1_3_with_its_self_signed_certificate(hardened, version):
    assert _handshake(hardened.port, version) == version.name.replace("_", ".").replace("TLSv1.", "TLSv1.")
    with hardened.client() as c:  # verified against var/tls/cert.pem, the local run's certificate
        assert c.get("/Users", params={"count": 0}).status_code == 200
        assert c.base_url.scheme == "https"


def test_tls_1_2_offers_only_entra_cipher_suites(hardened):
    with pytest.raises(ssl.SSLError):  # RSA key exchange, no forward secrecy: not on Entra's list
        _handshake(hardened.port, ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256:AES256-SHA:@SECLEVEL=0")
    assert _handshake(hardened.port, ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA256") == "TLSv1.2"


def test_plain_http_on_the_tls_port_is_refused(hardened):
    response = httpx.get(f"http://127.0.0.1:{hardened.port}/scim/Users", timeout=10)
    assert response.status_code == 400  # nginx: "plain HTTP request was sent to HTTPS port"


# --------------------------------------------------------------------------- rate limiting


def test_a_token_over_its_rate_gets_429_with_retry_after_and_others_are_not_affected(hardened):
    busy = hardened.create_token(unique("busy"))["token"]
    with hardened.client(busy) as c:
        statuses = [c.get("/Users", params={"count": 0}) for _ in range(2 * RATE_LIMIT + 1)]
    codes = [r.status_code for r in statuses]
    # A burst that straddles a window edge gets two windows' budget, never more.
    assert set(codes) == {200, 429} and RATE_LIMIT <= codes.count(200) <= 2 * RATE_LIMIT, codes
    refused = next(r for r in statuses if r.status_code == 429)
    assert_scim_error(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    calm = hardened.create_token(unique("calm"))["token"]
    with hardened.client(calm) as c:
        assert c.get("/Users", params={"count": 0}).status_code == 200


# --------------------------------------------------------------------------- Entra-issued JWTs


def _entra_token(key, **overrides) -> str:
    now = int(time.time())
    claims = {"iss": f"https://sts.windows.net/{TENANT}/", "aud": ENTRA_AUDIENCE, "tid": TENANT, "iat": now,
              "nbf": now, "exp": now + 3600, "appid": PROVISIONING_APP, **overrides}
    claims = {name: value for name, value in claims.items() if value is not None}  # None: leave the claim out
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "entra-1"})


def test_a_jwt_entra_issued_for_the_tenant_is_accepted_for_reads_and_writes(hardened, entra_key):
    with hardened.client(_entra_token(entra_key)) as c:
        assert c.get("/Users", params={"count": 0}).status_code == 200
        created = c.post("/Users", json=entra_user())
        assert created.status_code == 201, created.text


@pytest.mark.parametrize("why", ["wrong audience", "other tenant", "expired", "not yet valid", "other key",
                                 "other app"])
def test_a_jwt_that_is_not_entras_for_this_tenant_is_401(hardened, entra_key, why):
    now = int(time.time())
    key, path = entra_key, "/Users"
    overrides = {
        "wrong audience": {"aud": "api://someone-else"},
        "other tenant": {"iss": f"https://sts.windows.net/{uuid.uuid4()}/"},
        "expired": {"exp": now - 600, "iat": now - 4000, "nbf": now - 4000},
        "not yet valid": {"nbf": now + 600},
        "other key": {},
        "other app": {},
    }[why]
    if why == "other key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if why == "other app":
        path = "/nosuchapp/Users"
    with hardened.client(_entra_token(key, **overrides)) as c:
        assert_scim_error(c.get(path), 401)


def test_a_jwt_entra_issued_to_another_app_of_the_same_tenant_is_401(hardened, entra_key):
    """Same tenant, issuer, audience and signing key: only the calling application differs
    (another enterprise app of the tenant, or any app that asked Entra for such a token)."""
    for claims in ({"appid": str(uuid.uuid4())}, {"azp": str(uuid.uuid4()), "appid": None}):
        token = _entra_token(entra_key, **claims)
        with hardened.client(token) as c:
            assert_scim_error(c.get("/Users", params={"count": 0}), 401)
            assert_scim_error(c.post("/Users", json=entra_user()), 401)
    with hardened.client(_entra_token(entra_key, azp=PROVISIONING_APP, appid=None)) as c:  # a v2 token
        assert c.get("/Users", params={"count": 0}).status_code == 200


# --------------------------------------------------------------------------- mutual TLS


def test_with_a_client_ca_only_clients_holding_its_certificate_get_in(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mtls")
    ca = make_ca(tmp, "agents-ca")
    agent = issue_client(ca, tmp, "agent")
    agent_cert = (str(agent.cert), str(agent.key))
    with running_stack(tmp / "stack", workers=1, client_cert=agent_cert,
                       extra_env={"SCIM_TLS": "1", "SCIM_TLS_CLIENT_CA": str(ca.cert)}) as stack:
        with stack.client() as c:  # presents agent.pem
            assert c.get("/Users", params={"count": 0}).status_code == 200
        stranger = ssl.create_default_context(cafile=str(stack.var_dir / "tls" / "cert.pem"))
        with httpx.Client(base_url=stack.url, verify=stranger, timeout=30,
                          headers={"Authorization": f"Bearer {stack.token}"}) as c:
            assert c.get("/Users", params={"count": 0}).status_code == 400  # nginx: no required certificate
        other = issue_client(make_ca(tmp, "other-ca"), tmp, "other")
        stranger.load_cert_chain(other.cert, other.key)
        with httpx.Client(base_url=stack.url, verify=stranger, timeout=30,
                          headers={"Authorization": f"Bearer {stack.token}"}) as c:
            assert c.get("/Users", params={"count": 0}).status_code == 400  # a certificate the CA did not sign
