"""``scimbus init``: what a fresh clone needs before ``docker compose up -d``, never overwriting."""

from __future__ import annotations

import ipaddress
import re
import stat

import pytest
from cryptography import x509

from libs.config import load_settings
from services.cli import main
from services.cli.init import SECRETS, init

REQUIRED_BY_COMPOSE = {"SCIM_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
                       "SCIM_KEY_ENCRYPTION_KEY"}


def _env(path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


def test_a_fresh_folder_gets_every_secret_compose_requires_a_config_and_a_certificate(tmp_path):
    init(tmp_path, hosts=["scim.example.com", "10.0.0.5"])
    env = _env(tmp_path / ".env")
    assert set(SECRETS) == REQUIRED_BY_COMPOSE
    assert REQUIRED_BY_COMPOSE <= set(env) and all(len(env[n]) >= 32 for n in REQUIRED_BY_COMPOSE)
    assert len(set(env[n] for n in REQUIRED_BY_COMPOSE)) == len(REQUIRED_BY_COMPOSE)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+=?", env[n]) for n in REQUIRED_BY_COMPOSE)  # safe inside a URL
    load_settings({"SCIM_KEY_ENCRYPTION_KEY": env["SCIM_KEY_ENCRYPTION_KEY"]})  # a key the services accept
    assert env["COMPOSE_PROFILES"] == "grafana"
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert (tmp_path / "scimbus.toml").read_text().startswith("# scimbus settings")
    cert = x509.load_pem_x509_certificate((tmp_path / "deploy/tls/tls.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["scim.example.com"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert stat.S_IMODE((tmp_path / "deploy/tls/tls.key").stat().st_mode) == 0o600


def test_values_and_files_already_there_are_kept_and_only_empty_ones_filled(tmp_path):
    (tmp_path / ".env").write_text("# mine\nSCIM_TOKEN=keep-this-token\nPOSTGRES_PASSWORD=\nCOMPOSE_PROFILES=\n")
    (tmp_path / "scimbus.toml").write_text("[connectors]\n")
    (tmp_path / "deploy/tls").mkdir(parents=True)
    (tmp_path / "deploy/tls/tls.crt").write_text("site certificate")
    (tmp_path / "deploy/tls/tls.key").write_text("site key")
    done = init(tmp_path)
    text = (tmp_path / ".env").read_text()
    env = _env(tmp_path / ".env")
    assert env["SCIM_TOKEN"] == "keep-this-token" and env["COMPOSE_PROFILES"] == ""
    assert env["POSTGRES_PASSWORD"] and text.index("POSTGRES_PASSWORD=") < text.index("REDIS_PASSWORD=")  # in place
    assert text.startswith("# mine\n")
    assert (tmp_path / "scimbus.toml").read_text() == "[connectors]\n"
    assert (tmp_path / "deploy/tls/tls.crt").read_text() == "site certificate"
    assert sorted(done) == sorted(f"{tmp_path / '.env'}: added {n}" for n in
                                  ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
                                   "SCIM_KEY_ENCRYPTION_KEY"))
    # A second run has nothing to do and changes nothing.
    assert init(tmp_path) == [] and (tmp_path / ".env").read_text() == text


def test_files_named_in_env_are_where_the_certificate_goes(tmp_path):
    (tmp_path / ".env").write_text(f"SCIM_TLS_CERT_FILE={tmp_path}/site/cert.pem\nSCIM_TLS_KEY_FILE=site/key.pem\n")
    init(tmp_path, hosts=["localhost"])
    assert (tmp_path / "site/cert.pem").exists() and (tmp_path / "site/key.pem").exists()
    assert not (tmp_path / "deploy").exists()


def test_a_key_without_its_certificate_is_refused_and_left_alone(tmp_path):
    (tmp_path / "deploy/tls").mkdir(parents=True)
    (tmp_path / "deploy/tls/tls.key").write_text("a key")
    with pytest.raises(SystemExit, match="tls.crt is missing while its pair exists"):
        init(tmp_path)
    assert (tmp_path / "deploy/tls/tls.key").read_text() == "a key"


def test_the_command_says_what_it_did_and_what_comes_next(tmp_path, capsys):
    main(["init", "--dir", str(tmp_path), "--host", "scim.example.com"])
    out = capsys.readouterr().out
    assert "added SCIM_TOKEN" in out and "self-signed for scim.example.com" in out
    assert out.rstrip().endswith("next: docker compose up -d")
    main(["init", "--dir", str(tmp_path)])
    assert "nothing to do" in capsys.readouterr().out
