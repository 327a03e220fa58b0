"""k8s/overlays/example-ha (k8s/components/ha), rendered and checked offline: Redis with three
sentinels, every role on the sentinels' URL, a PostgreSQL replica for the readers, and the
network edges that adds (ingress and egress, evaluated like the base's)."""

from __future__ import annotations

from base64 import b64decode
from urllib.parse import unquote

import pytest

from libs.bus.connection import parse_sentinel_url
from libs.config import load_settings
from tests.deploy.test_kubernetes import _tree_copy
from tests.deploy.test_network_policies import DNS, PROXY, allowed_edges
from tests.support.deploy_checks import ROOT, render_kustomization

ROLES = ("front", "reader", "worker", "deliverer", "sweeper")


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> list[dict]:
    return render_kustomization(_tree_copy(tmp_path_factory.mktemp("k8s")) / "overlays" / "example-ha")


def _named(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _secret(docs) -> dict[str, str]:
    (secret,) = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("scimbus-")]
    return {k: b64decode(v).decode() for k, v in secret["data"].items()}


def test_every_role_reaches_redis_through_the_three_sentinels(docs):
    secret = _secret(docs)
    target = parse_sentinel_url(secret["SCIM_REDIS_URL"])
    sentinels = _named(docs, "StatefulSet")["scimbus-sentinel"]
    assert sentinels["spec"]["replicas"] == 3
    assert target.sentinels == [(f"scimbus-sentinel-{i}.{sentinels['spec']['serviceName']}", 26379) for i in range(3)]
    assert (target.service, target.username, target.password) == ("scimbus", "scimbus", secret["REDIS_PASSWORD"])
    load_settings({"SCIM_REDIS_URL": secret["SCIM_REDIS_URL"], "SCIM_DATABASE_URL": secret["SCIM_DATABASE_URL"],
                   "SCIM_READ_DATABASE_URL": secret["SCIM_READ_DATABASE_URL"]})
    script = sentinels["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "sentinel monitor scimbus %s 6379 2" in script and "sentinel auth-user scimbus ha" in script
    assert "REDIS_HA_PASSWORD" in secret and "$REDIS_HA_PASSWORD" not in str(sentinels["spec"]["template"]["spec"]
                                                                              ["containers"][0]["command"])


def test_redis_runs_two_pods_that_follow_whichever_primary_the_sentinels_name(docs):
    redis = _named(docs, "StatefulSet")["scimbus-redis"]
    assert redis["spec"]["replicas"] == 2
    assert _named(docs, "Service")[redis["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    script = redis["spec"]["template"]["spec"]["containers"][0]["args"][0]
    assert "get-master-addr-by-name scimbus" in script and "replicaof %s 6379" in script
    assert "masterauth" not in redis["spec"]["template"]["spec"]["containers"][0]["command"]
    assert set(_named(docs, "PodDisruptionBudget")) >= {"scimbus-redis", "scimbus-sentinel"}


def test_the_readers_read_the_postgresql_replica_and_only_they_may(docs):
    secret = _secret(docs)
    assert "@scimbus-postgres-replica:5432/" in unquote(secret["SCIM_READ_DATABASE_URL"])
    replica = _named(docs, "StatefulSet")["scimbus-postgres-replica"]
    assert "pg_basebackup" in replica["spec"]["template"]["spec"]["initContainers"][0]["args"][0]
    primary = _named(docs, "StatefulSet")["scimbus-postgres"]["spec"]["template"]["spec"]["containers"][0]
    assert "hba_file=/etc/scimbus-pg/pg_hba.conf" in primary["args"]
    edges = allowed_edges(docs)
    assert ("reader", "postgres-replica", 5432, "TCP") in edges
    assert ("postgres-replica", "postgres", 5432, "TCP") in edges
    for role in ("front", "worker", "deliverer", "sweeper", "gateway"):
        assert (role, "postgres-replica", 5432, "TCP") not in edges, role


def test_the_network_policies_allow_the_sentinel_and_replication_edges_and_no_other(docs):
    edges = allowed_edges(docs)
    needed = {*((role, "sentinel", 26379, "TCP") for role in ROLES), ("sentinel", "redis", 6379, "TCP"),
              ("redis", "sentinel", 26379, "TCP"), ("sentinel", DNS.name, 53, "UDP"), ("redis", DNS.name, 53, "UDP"),
              ("postgres-replica", DNS.name, 53, "UDP")}
    assert needed <= edges, needed - edges
    touching = {e for e in edges if "sentinel" in (e[0], e[1])}
    assert touching <= needed | {("sentinel", DNS.name, 53, "TCP")}, touching - needed
    for outsider in ("migrate", "gateway", PROXY.name, "client"):
        assert (outsider, "sentinel", 26379, "TCP") not in edges


def test_the_component_names_cloudnativepg_as_the_production_way_for_postgresql():
    text = (ROOT / "k8s/components/ha/kustomization.yaml").read_text()
    assert "CloudNativePG" in text and "-rw" in text and "-ro" in text
