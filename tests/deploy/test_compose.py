"""compose.yaml against the Compose Specification's JSON Schema (vendored from the
check-jsonschema package: deploy/schemas/compose-spec.json), plus what this deployment
promises: TLS gateway on 8585, two fronts and readers, a scalable worker, persistent Redis
and PostgreSQL, a migration the others wait for, no secret in the file."""

from __future__ import annotations

import re

import yaml

from tests.support.deploy_checks import ROOT, compose_problems

COMPOSE = ROOT / "compose.yaml"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_follows_the_compose_specification():
    assert compose_problems(COMPOSE) == []


def test_a_broken_copy_of_the_compose_file_fails_the_schema(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("    stop_grace_period: 60s", "    stop_grace_periods: 60s"))
    problems = compose_problems(broken)
    assert len(problems) == 1
    assert problems[0] == ("compose.yaml: services/postgres: Unevaluated properties are not allowed "
                           "('stop_grace_periods' was unexpected)")
    broken.write_text(COMPOSE.read_text().replace("service_completed_successfully", "service_finished"))
    assert any(p.startswith("compose.yaml: services/front/depends_on: ") and "service_finished" in p
               and p.endswith("is not valid under any of the given schemas") for p in compose_problems(broken))


def test_the_gateway_serves_tls_on_8585_with_the_certificate_from_compose_secrets():
    gateway = _compose()["services"]["gateway"]
    assert gateway["ports"] == ["${SCIM_PORT:-8585}:8585"]
    assert gateway["environment"]["SCIM_GATEWAY_LISTEN"] == "8585 ssl"
    assert set(gateway["secrets"]) == {"scim_tls_cert", "scim_tls_key"}
    assert gateway["environment"]["SCIM_TLS_CERT"] == "/run/secrets/scim_tls_cert"
    assert gateway["depends_on"]["front"]["condition"] == "service_healthy"


def test_fronts_and_readers_run_twice_and_the_worker_scales():
    services = _compose()["services"]
    assert services["front"]["deploy"]["replicas"] == 2
    assert services["reader"]["deploy"]["replicas"] == 2
    worker = services["worker"]
    # `--scale worker=N` needs no fixed name and no published port.
    assert "container_name" not in worker and "ports" not in worker


def test_every_scimbus_role_waits_for_the_migration_and_redis():
    services = _compose()["services"]
    for role in ("front", "reader", "worker"):
        assert services[role]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[role]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_the_front_stops_before_the_workers_that_apply_the_writes_it_still_holds():
    # Compose stops in reverse dependency order; started is enough, a worker's health needs no front.
    assert _compose()["services"]["front"]["depends_on"]["worker"] == {"condition": "service_started"}


def test_redis_appends_to_a_volume_and_postgresql_keeps_its_data_on_one():
    compose = _compose()
    redis, postgres = compose["services"]["redis"], compose["services"]["postgres"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert "redis:/data" in redis["volumes"]
    assert "postgres:/var/lib/postgresql/data" in postgres["volumes"]
    assert {"redis", "postgres", "prometheus", "grafana"} <= set(compose["volumes"])


def test_no_secret_is_written_in_the_compose_file():
    # The demo targets of the optional profile carry demo passwords; the service's own do not.
    services = {n: s for n, s in _compose()["services"].items() if s.get("profiles") != ["targets"]}
    text = yaml.safe_dump(services)
    for name in ("SCIM_TOKEN", "POSTGRES_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD", "REDISCLI_AUTH"):
        values = re.findall(rf"{name}: (\S+)", text)
        assert values
        for value in values:
            assert value.startswith("${") and ":?" in value, f"{name} must come from .env, not {value}"
    assert "${POSTGRES_PASSWORD:?" in services["front"]["environment"]["SCIM_DATABASE_URL"]
    assert services["front"]["environment"]["SCIM_REDIS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
    assert (ROOT / ".gitignore").read_text().count("\n.env\n") == 1


def test_the_downstream_targets_and_grafana_are_optional_profiles():
    services = _compose()["services"]
    assert services["openldap"]["profiles"] == ["targets"]
    assert services["demoapp-db"]["profiles"] == ["targets"]
    # Grafana has no Debian package: offline sites run without it (issue 17).
    assert services["grafana"]["profiles"] == ["grafana"]
    assert all("profiles" not in s for n, s in services.items() if n not in ("openldap", "demoapp-db", "grafana"))


def test_redis_lets_in_only_clients_with_the_password_from_env():
    redis = _compose()["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"
    # redis-cli exits 0 on NOAUTH too: the probe must look for PONG.
    assert redis["healthcheck"]["test"] == ["CMD-SHELL", "redis-cli ping | grep -q PONG"]


def test_every_image_comes_from_a_variable_whose_default_is_the_official_image():
    services = _compose()["services"]
    expected = {"gateway": "${SCIM_NGINX_IMAGE:-nginx:", "redis": "${SCIM_REDIS_IMAGE:-redis:",
                "postgres": "${SCIM_POSTGRES_IMAGE:-postgres:", "demoapp-db": "${SCIM_POSTGRES_IMAGE:-postgres:",
                "prometheus": "${SCIM_PROMETHEUS_IMAGE:-prom/prometheus:",
                "grafana": "${SCIM_GRAFANA_IMAGE:-grafana/grafana:", "front": "${SCIM_IMAGE:-scimbus:"}
    for name, prefix in expected.items():
        assert services[name]["image"].startswith(prefix), name
    fixed = {n for n, s in services.items() if not s["image"].startswith("${")}
    assert fixed == {"openldap"}  # a trial target only; no Debian equivalent is built for it


def test_prometheus_scrapes_every_role_with_workers_found_by_dns():
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["dns_sd_configs"][0] for j in config["scrape_configs"]}
    services = _compose()["services"]
    for role in ("worker", "deliverer", "sweeper"):
        assert jobs[f"scimbus-{role}"]["names"] == [role]
        assert str(jobs[f"scimbus-{role}"]["port"]) in services[role]["command"]
    for role in ("front", "reader"):
        assert jobs[f"scimbus-{role}"]["names"] == [role]
        assert services[role]["command"][-1].endswith(f":{jobs[f'scimbus-{role}']['port']}")


def test_every_variable_compose_requires_is_in_the_env_example():
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == {"SCIM_TOKEN", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD",
                        "SCIM_KEY_ENCRYPTION_KEY"}
    example = (ROOT / "deploy/env.example").read_text()
    for name in required:
        assert re.search(rf"^{name}=$", example, re.M), f"deploy/env.example lacks {name}="
    optional = set(re.findall(r"\$\{(\w+):-", COMPOSE.read_text()))
    for name in optional - {"LDAP_ADMIN_PASSWORD", "DEMOAPP_DB_PASSWORD"}:
        assert f"# {name}=" in example, f"deploy/env.example does not mention {name}"
