"""The token endpoint in process, for what a running stack cannot show (issue 16)."""

from __future__ import annotations

import pytest

from libs.security.credentials import CredentialAdmin
from libs.store.session import create_engine_from_url

pytestmark = pytest.mark.db


def test_without_a_key_encryption_key_the_token_endpoint_answers_503_and_logs_why(database_url, tmp_path, capsys):
    from services.front.app import create_app

    engine = create_engine_from_url(database_url)
    client, secret = CredentialAdmin(engine).create("default", "hr", kind="client")
    engine.dispose()
    app = create_app({"database_url": database_url, "var_dir": tmp_path, "token": "t" * 32})
    answer = app.test_client().post("/oauth/token", data={"grant_type": "client_credentials",
                                                          "client_id": client.id, "client_secret": secret})
    assert answer.status_code == 503 and answer.json["error"] == "temporarily_unavailable"
    assert "SCIM_KEY_ENCRYPTION_KEY" in capsys.readouterr().err  # the operator's to fix, and told how
    assert not (tmp_path / "key-encryption-key").exists()  # no key made up by one process of many
