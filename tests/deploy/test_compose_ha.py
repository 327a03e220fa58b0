"""compose.ha.yaml, the high-availability overlay: Redis with three sentinels and a replica,
a PostgreSQL streaming replica for the readers, every role on the sentinels' URL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from libs.config import load_settings
from tests.support.deploy_checks import ROOT, compose_problems

OVERLAY = ROOT / "compose.ha.yaml"
ROLES = ("front", "reader", "worker", "deliverer", "sweeper", "migrate")


def test_the_overlay_follows_the_compose_specification():
    assert compose_problems(OVERLAY) == []


def test_the_overlay_writes_no_secret():
    text = OVERLAY.read_text()
    for value in re.findall(r"(?:REDIS_PASSWORD|POSTGRES_PASSWORD|REDISCLI_AUTH): (\S+)", text):
        assert value.startswith("${") and ":?" in value, value


@pytest.fixture(scope="module")
def merged() -> dict:
    if shutil.which("docker") is None or subprocess.run(["docker", "compose", "version"],
                                                        capture_output=True).returncode != 0:
        pytest.skip("docker compose is not installed")
    env = {**os.environ, "SCIM_TOKEN": "t" * 32, "POSTGRES_PASSWORD": "pg-secret", "REDIS_PASSWORD": "redis-secret",
           "SCIM_KEY_ENCRYPTION_KEY": "k", "GRAFANA_ADMIN_PASSWORD": "g"}
    done = subprocess.run(["docker", "compose", "-f", "compose.yaml", "-f", "compose.ha.yaml", "config"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_every_role_reaches_redis_through_the_three_sentinels(merged):
    services = merged["services"]
    for role in ROLES:
        url = services[role]["environment"]["SCIM_REDIS_URL"]
        assert url == ("redis+sentinel://:redis-secret@sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
                       "/scimbus/0"), role
        load_settings({"SCIM_REDIS_URL": url})  # the services accept it
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        assert services[name]["environment"]["REDIS_PASSWORD"] == "redis-secret"  # auth-pass to the data nodes
    assert "--replicaof" in services["redis-replica"]["command"]
    assert "--masterauth" in services["redis"]["command"], "the old primary must be able to follow the new one"
    for role in ("front", "worker", "reader"):
        assert services[role]["depends_on"]["sentinel-1"]["condition"] == "service_healthy"


def test_the_readers_read_the_postgresql_replica(merged):
    services = merged["services"]
    assert services["reader"]["environment"]["SCIM_READ_DATABASE_URL"] == \
        "postgresql://scimbus:pg-secret@postgres-replica:5432/scimbus"
    assert "SCIM_READ_DATABASE_URL" not in services["front"]["environment"]
    replica = services["postgres-replica"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert any("postgres-primary-init.sh" in str(v) for v in services["postgres"]["volumes"])
