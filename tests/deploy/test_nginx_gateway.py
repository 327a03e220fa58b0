"""``nginx -t`` on the gateway configuration exactly as compose and Kubernetes render it:
the shared routing template (and, in compose, the TLS snippet) with the environment each
deployment gives the official nginx image. Only the upstream host names change to
127.0.0.1 (nginx resolves them while checking, and `front`/`scimbus-front` exist only on
those networks) and the certificate paths to a certificate made here."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.deploy_checks import ROOT, nginx_problems, render_kustomization

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
