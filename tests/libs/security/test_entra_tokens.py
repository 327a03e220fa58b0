"""JWTs Entra issues to its provisioning service: pinned to the calling application (issue 16)."""

from __future__ import annotations

import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.config import load_settings
from libs.security.jwt_tokens import ENTRA_AUDIENCE, EntraVerifier, InvalidToken

TENANT, HR_APP, HR_OBJECT, ACME_APP = (str(uuid.uuid4()) for _ in range(4))


@pytest.fixture(scope="module")
def entra_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def verifier(tmp_path, entra_key):
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(entra_key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "entra-1", "use": "sig"}]}))
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_APPS": "acme", "SCIM_ENTRA_TENANT_ID": TENANT,
                              "SCIM_ENTRA_JWKS": str(tmp_path / "jwks.json"),
                              "SCIM_ENTRA_CALLERS": f"{HR_APP}:{HR_OBJECT},acme={ACME_APP}"})
    return EntraVerifier.from_settings(settings)


def _token(key, **claims) -> str:
    now = int(time.time())
    body = {"iss": f"https://sts.windows.net/{TENANT}/", "aud": ENTRA_AUDIENCE, "tid": TENANT, "iat": now,
            "nbf": now, "exp": now + 3600, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "entra-1"})


def test_a_token_issued_to_the_configured_app_and_object_is_accepted(verifier, entra_key):
    claims = verifier.verify(_token(entra_key, appid=HR_APP, oid=HR_OBJECT), "default")
    assert claims.app == "default" and claims.name == f"entra:{HR_APP}" and claims.scopes == {"read", "write"}
    assert verifier.verify(_token(entra_key, azp=ACME_APP, oid=str(uuid.uuid4())), "acme").app == "acme"


@pytest.mark.parametrize("why, claims, app", [
    ("another app of the tenant", {"appid": str(uuid.uuid4()), "oid": HR_OBJECT}, "default"),
    ("another app, v2 token", {"azp": str(uuid.uuid4())}, "acme"),
    ("the right app id, another service principal", {"appid": HR_APP, "oid": str(uuid.uuid4())}, "default"),
    ("the right app id, no object id", {"appid": HR_APP}, "default"),
    ("the app of another SCIM app", {"appid": ACME_APP}, "default"),
    ("appid and azp disagree", {"appid": ACME_APP, "azp": str(uuid.uuid4())}, "acme"),
    ("no calling app at all", {}, "acme"),
])
def test_a_token_of_the_tenant_issued_to_another_caller_is_refused(verifier, entra_key, why, claims, app):
    with pytest.raises(InvalidToken):
        verifier.verify(_token(entra_key, **claims), app)


def test_a_scim_app_no_caller_is_configured_for_accepts_no_entra_token(tmp_path, entra_key):
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_APPS": "acme", "SCIM_ENTRA_TENANT_ID": TENANT,
                              "SCIM_ENTRA_JWKS": str(tmp_path / "jwks.json"),
                              "SCIM_ENTRA_CALLERS": f"acme={ACME_APP}"})
    with pytest.raises(InvalidToken, match="not accepted"):
        EntraVerifier.from_settings(settings).verify(_token(entra_key, appid=ACME_APP), "default")
