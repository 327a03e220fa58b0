"""``nginx -t`` on the gateway configuration exactly as compose and Kubernetes render it:
the shared routing template (and, in compose, the TLS snippet) with the environment each
deployment gives the official nginx image. Only the upstream host names change to
127.0.0.1 (nginx resolves them while checking, and `front`/`scimbus-front` exist only on
those networks) and the certificate paths to a certificate made here."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from libs.security.tls import ENTRA_CIPHERS
from services.runtime.local_run import render_template
from tests.support.deploy_checks import ROOT, nginx_folder, nginx_problems, render_kustomization, running_nginx
from tests.support.servers import free_port

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)

TEMPLATE = ROOT / "deploy/nginx/templates/scimbus.conf.template"
TLS_SNIPPET = ROOT / "deploy/nginx/compose/tls.conf.template"


def _local_upstreams(env: dict[str, str]) -> dict[str, str]:
    return {k: ("127.0.0.1:" + v.rsplit(":", 1)[1]) if k.endswith("_UPSTREAM") else v for k, v in env.items()}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=scim.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
    return cert, key


def _compose_gateway_env(certificate: tuple[Path, Path]) -> dict[str, str]:
    gateway = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["gateway"]
    env = _local_upstreams({k: str(v) for k, v in gateway["environment"].items()})
    assert env["SCIM_TLS_CERT"] == "/run/secrets/scim_tls_cert"  # what compose mounts; replaced below
    env["SCIM_TLS_CERT"], env["SCIM_TLS_KEY"] = map(str, certificate)
    return env


def _compose_templates() -> list[Path]:
    mounts = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["gateway"]["volumes"]
    return [ROOT / m.split(":")[0].removeprefix("./") for m in mounts if "/etc/nginx/templates/" in m]


def test_nginx_accepts_the_compose_gateway_with_tls(tmp_path, certificate):
    templates = _compose_templates()
    assert TEMPLATE in templates and TLS_SNIPPET in templates
    assert nginx_problems(templates, _compose_gateway_env(certificate), tmp_path) == []


def test_nginx_accepts_the_kubernetes_gateway(tmp_path):
    docs = render_kustomization(ROOT / "k8s/base")
    gateway = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "scimbus-gateway")
    env = _local_upstreams({e["name"]: e["value"] for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]})
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("scimbus-gateway"))
    assert set(config_map["data"]) == {"scimbus.conf.template", "real-ip.conf.template"}
    for name, text in config_map["data"].items():
        (tmp_path / name).write_text(text)
    templates = [tmp_path / name for name in config_map["data"]]
    assert nginx_problems(templates, env, tmp_path / "run") == []


def test_nginx_rejects_a_broken_copy_of_the_gateway_template(tmp_path, certificate):
    broken = tmp_path / "scimbus.conf.template"
    broken.write_text(TEMPLATE.read_text().replace("proxy_read_timeout 65s;", "proxy_read_timeout 65s"))
    problems = nginx_problems([broken, TLS_SNIPPET], _compose_gateway_env(certificate), tmp_path / "run")
    assert len(problems) == 1 and "[emerg]" in problems[0] and "test failed" in problems[0]


def test_nginx_rejects_the_compose_gateway_without_a_readable_certificate(tmp_path, certificate):
    env = _compose_gateway_env(certificate)
    env["SCIM_TLS_CERT"] = str(tmp_path / "missing.crt")
    problems = nginx_problems(_compose_templates(), env, tmp_path / "run")
    assert len(problems) == 1 and "missing.crt" in problems[0]


# --- the compose gateway's TLS, served (issue 16) ---------------------------------------

@pytest.fixture
def compose_gateway(certificate) -> Iterator[int]:
    """The compose gateway's templates rendered as the nginx image does, served on a free port."""
    folder, port = nginx_folder(), free_port()
    env = {**_compose_gateway_env(certificate), "SCIM_GATEWAY_LISTEN": f"127.0.0.1:{port} ssl"}
    (folder / "conf.d").mkdir()
    for template in _compose_templates():
        (folder / "conf.d" / template.name.removesuffix(".template")).write_text(
            render_template(template.read_text(), env))
    (folder / "nginx.conf").write_text(f"pid {folder}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
                                       f"http {{\n  client_body_temp_path {folder}/body;\n"
                                       f"  include {folder}/conf.d/*.conf;\n}}\n")
    try:
        with running_nginx(folder, port):
            yield port
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tls12(port: int, ciphers: str) -> ssl.SSLSocket:
    """A TLS 1.2 connection offering only ``ciphers`` (at OpenSSL's level 0, so that a refusal
    can only come from the server), or ssl.SSLError."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return ctx.wrap_socket(raw)
    except BaseException:
        raw.close()
        raise


def test_the_compose_tls_snippet_uses_the_local_runs_entra_cipher_list():
    assert re.search(r"^ssl_ciphers (\S+);$", TLS_SNIPPET.read_text(), re.M).group(1) == ENTRA_CIPHERS


@pytest.mark.parametrize("suite", ["ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA", "AES128-GCM-SHA256",
                                   "AES256-SHA256"])
def test_the_compose_gateway_refuses_cbc_sha1_and_key_exchange_without_forward_secrecy(compose_gateway, suite):
    with pytest.raises(ssl.SSLError):
        _tls12(compose_gateway, suite).close()


def test_the_compose_gateway_speaks_entras_suites_and_issues_no_session_ticket(compose_gateway):
    for suite in ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA256"):
        with _tls12(compose_gateway, suite) as tls:
            assert tls.cipher()[0] == suite
            tls.sendall(b"GET / HTTP/1.1\r\nHost: scim.test\r\nConnection: close\r\n\r\n")
            assert tls.recv(100).startswith(b"HTTP/1.1 404")  # the SCIM 404 of /, over TLS
            assert not tls.session.has_ticket
