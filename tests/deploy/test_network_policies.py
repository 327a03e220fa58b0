"""Kubernetes NetworkPolicies against what each role really connects to (issue 16, medium 11).

The connections come from the code, not from a list kept by hand: each role's entry point
(``cmd_<role>`` of the CLI, the modules it names and everything they import) and the
settings it reads (``settings.database``: PostgreSQL, ``settings.redis_url``: Redis), the
role that runs the delivery queue (the downstream applications), the gateway's upstreams
(its environment), the metrics port each role serves (its arguments), KEDA's Redis address
(the ScaledObject). The policies of the rendered manifests are then evaluated, ingress and
egress, for every pair of peers, and the edges they allow must be exactly those."""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from services.runtime.roles import NAMES as ROLE_NAMES
from tests.support.deploy_checks import ROOT, render_kustomization

NAMESPACE = "scimbus"
CLI_MODULES = ("services/cli/command.py", "services/cli/deliveries.py")
ROLES = (*ROLE_NAMES, "migrate")
SETTINGS_MODULE = "libs.config"  # defines the settings; reading them is what counts


# --- what the code connects to ----------------------------------------------------------

def _module_file(name: str) -> Path | None:
    for path in (ROOT / f"{name.replace('.', '/')}.py", ROOT / name.replace(".", "/") / "__init__.py"):
        if path.exists():
            return path
    return None


def _our_modules(names: set[str]) -> set[str]:
    return {n for n in names if n.split(".")[0] in ("libs", "services") and _module_file(n)}


def _imports(tree: ast.AST) -> set[str]:
    """Modules imported anywhere in ``tree`` (function bodies too: the CLI imports lazily)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return _our_modules(names)


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(_module_file(module).read_text())  # type: ignore[union-attr]


def _closure(start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += _imports(_tree(module))
    return seen


def _entry_point(role: str, cli_modules=CLI_MODULES) -> tuple[set[str], set[str]]:
    """(modules, settings read) of ``scimbus <role>``: ``cmd_<role>`` and the CLI functions it
    calls, the modules they import or name (``_gunicorn("front", "services.front.wsgi")``)."""
    functions = {n.name: n for path in cli_modules for n in ast.parse((ROOT / path).read_text()).body
                 if isinstance(n, ast.FunctionDef)}
    modules: set[str] = set()
    read: set[str] = set()
    todo, seen = [f"cmd_{role}"], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        function = functions[name]
        modules |= _imports(function)
        for node in ast.walk(function):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                modules |= _our_modules({node.value})
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
            elif isinstance(node, ast.Attribute):
                read.add(node.attr)
    assert seen, f"no cmd_{role} in {cli_modules}"
    return modules - {SETTINGS_MODULE}, read


def _attributes(module: str) -> set[str]:
    return {n.attr for n in ast.walk(_tree(module)) if isinstance(n, ast.Attribute)}


def _serves_the_delivery_queue(module: str) -> bool:
    """``start_pool(settings, settings.delivery_queue, …)``: the pool runs the deliveries."""
    return any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "start_pool"
               and any(isinstance(a, ast.Attribute) and a.attr == "delivery_queue" for a in n.args)
               for n in ast.walk(_tree(module)))


def connections_in_code(role: str) -> dict[str, set[str]]:
    """{what the role connects to: the modules that say so}: postgres, redis, targets."""
    modules, read = _entry_point(role)
    found: dict[str, set[str]] = {}
    for module in sorted(_closure(modules) - {SETTINGS_MODULE}) + ["(entry point)"]:
        attributes = read if module == "(entry point)" else _attributes(module)
        if "database" in attributes or "database_url" in attributes:
            found.setdefault("postgres", set()).add(module)
        if "redis_url" in attributes:
            found.setdefault("redis", set()).add(module)
        if module != "(entry point)" and module in modules and _serves_the_delivery_queue(module):
            found.setdefault("targets", set()).add(module)
    return found


# --- the manifests' peers and policies --------------------------------------------------

@dataclass(frozen=True)
class Peer:
    name: str
    namespace: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[int, str], ...] = ()
    external: bool = False  # outside the cluster (only ipBlock rules match it)


OUTSIDE_CLIENT = Peer("client", "", (), external=True)
TARGET = Peer("target", "", (), ((389, "TCP"), (443, "TCP"), (5432, "TCP")), external=True)
PROMETHEUS = Peer("prometheus", "monitoring", (("app", "prometheus"),))
KEDA = Peer("keda", "keda", (("app", "keda-operator"),))
DNS = Peer("kube-dns", "kube-system", (("k8s-app", "kube-dns"),), ((53, "UDP"), (53, "TCP")))
PROXY = Peer("gateway-proxy", "gateway-system", (("app", "proxy"),))


def _pods(docs: list[dict]) -> dict[str, Peer]:
    """The role (component label) → its pod, with the ports its containers declare."""
    pods = {}
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            template = doc["spec"]["template"]
            labels = template["metadata"]["labels"]
            ports = tuple((p["containerPort"], p.get("protocol", "TCP"))
                          for c in template["spec"]["containers"] for p in c.get("ports", []))
            pods[labels["app.kubernetes.io/component"]] = Peer(labels["app.kubernetes.io/component"],
                                                               doc["metadata"].get("namespace", NAMESPACE),
                                                               tuple(sorted(labels.items())), ports)
    return pods


def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    if selector.get("matchLabels", {}).items() - labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present, value = e["key"] in labels, labels.get(e["key"])
        if not {"In": present and value in e.get("values", []), "NotIn": value not in e.get("values", []),
                "Exists": present, "DoesNotExist": not present}[e["operator"]]:
            return False
    return True


def _peer_matches(entry: dict, peer: Peer, policy_namespace: str) -> bool:
    if "ipBlock" in entry:
        return peer.external  # pod traffic is matched by pod and namespace selectors
    if peer.external:
        return False
    if "namespaceSelector" in entry:
        if not _selects(entry["namespaceSelector"], {"kubernetes.io/metadata.name": peer.namespace}):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return _selects(entry.get("podSelector"), dict(peer.labels))


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    return "ports" not in rule or any(p.get("port") == port and p.get("protocol", "TCP") == protocol
                                      for p in rule["ports"])


def _namespace(doc: dict) -> str:
    return doc["metadata"].get("namespace", NAMESPACE)


def _admitted(policies: list[dict], direction: str, subject: Peer, other: Peer, port: int, protocol: str) -> bool:
    """Whether ``subject``'s policies of ``direction`` (Ingress, Egress) let ``other`` through."""
    if subject.external:
        return True
    field, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    mine = [p for p in policies if _namespace(p) == subject.namespace
            and direction in p["spec"].get("policyTypes", ["Ingress"])
            and _selects(p["spec"]["podSelector"], dict(subject.labels))]
    if not mine:
        return True  # no policy selects it in this direction: all is allowed
    return any(_port_matches(rule, port, protocol)
               and (peers not in rule or any(_peer_matches(e, other, _namespace(p)) for e in rule[peers]))
               for p in mine for rule in p["spec"].get(field, []))


def allowed_edges(docs: list[dict]) -> set[tuple[str, str, int, str]]:
    """Every (source, destination, port, protocol) the policies let through."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    pods = _pods(docs)
    sources = [*pods.values(), PROMETHEUS, KEDA, PROXY, OUTSIDE_CLIENT]
    destinations = [*pods.values(), DNS, TARGET]
    ours = set(pods.values())
    return {(src.name, dst.name, port, protocol)
            for src in sources for dst in destinations if src != dst and {src, dst} & ours
            for port, protocol in dst.ports
            if _admitted(policies, "Egress", src, dst, port, protocol)
            and _admitted(policies, "Ingress", dst, src, port, protocol)}


# --- the edges the roles need -----------------------------------------------------------

def _arg(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def needed_edges(docs: list[dict]) -> set[tuple[str, str, int, str]]:
    pods = _pods(docs)
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    workloads = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: d
                 for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Job")}

    def port_of(role: str) -> int:
        return pods[role].ports[0][0]

    def behind(address: str) -> tuple[str, int]:
        """The role and container port an address ``service[.namespace…]:port`` reaches."""
        host, port = address.rsplit(":", 1)
        service = services[host.split(".")[0]]
        role = service["spec"]["selector"]["app.kubernetes.io/component"]
        (entry,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        target = entry.get("targetPort", entry["port"])
        (container,) = workloads[role]["spec"]["template"]["spec"]["containers"]
        return role, next(p["containerPort"] for p in container["ports"] if target in (p["name"], p["containerPort"]))

    edges = set()
    for role in ROLES:
        uses = connections_in_code(role)
        for store in ("postgres", "redis"):
            if store in uses:
                edges.add((role, store, port_of(store), "TCP"))
        if "targets" in uses:
            edges |= {(role, TARGET.name, port, protocol) for port, protocol in TARGET.ports}
    (gateway,) = workloads["gateway"]["spec"]["template"]["spec"]["containers"]
    for variable in ("SCIM_FRONT_UPSTREAM", "SCIM_READER_UPSTREAM"):
        edges.add(("gateway", *behind(next(e["value"] for e in gateway["env"] if e["name"] == variable)), "TCP"))
    for source in (OUTSIDE_CLIENT, PROXY, PROMETHEUS, KEDA):  # the public entry: open to anyone
        edges |= {(source.name, "gateway", port, protocol) for port, protocol in pods["gateway"].ports}
    for role in (*ROLES, "gateway"):
        edges |= {(role, DNS.name, port, protocol) for port, protocol in DNS.ports}
    for role in ROLES:  # Prometheus scrapes each role where it serves /metrics
        (container,) = workloads[role]["spec"]["template"]["spec"]["containers"]
        args = container.get("args", [])
        port = _arg(args, "--metrics-port") or (_arg(args, "--bind") or "").rpartition(":")[2]
        if port:
            edges.add((PROMETHEUS.name, role, int(port), "TCP"))
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    edges.add((KEDA.name, *behind(scaled["spec"]["triggers"][0]["metadata"]["address"]), "TCP"))
    return edges


# --- the tests ----------------------------------------------------------------------------

def _tree_copy(tmp: Path) -> Path:
    target = tmp / "k8s"
    shutil.copytree(ROOT / "k8s", target, ignore=shutil.ignore_patterns("secrets.env"))
    for overlay in ("example", "example-ingress"):
        shutil.copy(target / "overlays" / overlay / "secrets.env.example", target / "overlays" / overlay / "secrets.env")
    return target


def _difference(docs: list[dict]) -> tuple[set, set]:
    allowed, needed = allowed_edges(docs), needed_edges(docs)
    return needed - allowed, allowed - needed


def test_each_role_connects_to_what_its_entry_point_reads_in_the_settings():
    uses = {role: set(connections_in_code(role)) for role in ROLES}
    assert uses == {
        "front": {"postgres", "redis"},  # credentials and signing keys; the bus
        "reader": {"postgres", "redis"},  # the directory; rate limits
        "worker": {"postgres", "redis"},
        "deliverer": {"postgres", "redis", "targets"},
        "sweeper": {"postgres", "redis"},
        "migrate": {"postgres"},
    }
    assert "libs.web.auth" in connections_in_code("reader")["redis"]
    assert "libs.web.auth" in connections_in_code("front")["postgres"]


@pytest.mark.parametrize("overlay", ["example", "example-ingress"])
def test_the_network_policies_allow_exactly_the_connections_each_role_needs(tmp_path, overlay):
    docs = render_kustomization(_tree_copy(tmp_path) / "overlays" / overlay)
    missing, extra = _difference(docs)
    assert not missing, f"needed but blocked: {sorted(missing)}"
    assert not extra, f"allowed but not needed: {sorted(extra)}"


def test_each_roles_client_labels_match_its_connections(tmp_path):
    docs = render_kustomization(_tree_copy(tmp_path) / "overlays" / "example")
    for role in ROLES:
        labels = dict(_pods(docs)[role].labels)
        uses = connections_in_code(role)
        assert (labels.get("scimbus/redis-client") == "true") == ("redis" in uses), role
        assert (labels.get("scimbus/database-client") == "true") == ("postgres" in uses), role


@pytest.mark.parametrize("change, edge", [
    # The review's findings, put back in a copy: the check must see each.
    (("front.yaml", '        scimbus/database-client: "true"  # credentials, signing keys\n', ""),
     ("front", "postgres", 5432, "TCP")),
    (("reader.yaml", '        scimbus/redis-client: "true"  # rate limits (SCIM_RATE_LIMIT)\n', ""),
     ("reader", "redis", 6379, "TCP")),
    (("network-policies.yaml", "ports: [{port: 8605, protocol: TCP}]", "ports: [{port: 8603, protocol: TCP}]"),
     ("prometheus", "sweeper", 8605, "TCP")),
])
def test_a_copy_whose_labels_or_policies_miss_a_connection_fails_the_check(tmp_path, change, edge):
    tree = _tree_copy(tmp_path)
    path = tree / "base" / change[0]
    assert change[1] in path.read_text()
    path.write_text(path.read_text().replace(change[1], change[2]))
    missing, _ = _difference(render_kustomization(tree / "overlays" / "example"))
    assert edge in missing


def test_a_copy_without_the_default_egress_deny_allows_too_much(tmp_path):
    # The review: "no egress policy exists". Redis and PostgreSQL need no egress at all.
    tree = _tree_copy(tmp_path)
    path = tree / "base" / "network-policies.yaml"
    text = path.read_text()
    path.write_text(text.replace("  podSelector: {}\n  policyTypes: [Ingress, Egress]", "  podSelector: {}\n  policyTypes: [Ingress]"))
    assert path.read_text() != text
    _, extra = _difference(render_kustomization(tree / "overlays" / "example"))
    assert ("postgres", TARGET.name, 443, "TCP") in extra and ("redis", "gateway", 8080, "TCP") in extra
