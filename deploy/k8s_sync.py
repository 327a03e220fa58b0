"""Copy the two files Kubernetes shares with compose into k8s/base (``make k8s-sync``).

kustomize reads nothing outside a kustomization's folder, so k8s/base keeps a copy of the
gateway's nginx template, and the alert rules wrapped in a PrometheusRule. This script
writes both from their one source; ``--check`` (run by the tests) fails when a copy drifts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "deploy/nginx/templates/scimbus.conf.template"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
K8S_TEMPLATE = ROOT / "k8s/base/gateway/scimbus.conf.template"
K8S_RULE = ROOT / "k8s/base/prometheus-rule.yaml"

RULE_HEADER = """\
# Generated from deploy/prometheus/alerts.yml by `make k8s-sync`: edit that file, not this.
"""


class _BlockDumper(yaml.SafeDumper):
    """Multi-line PromQL stays a readable ``|`` block, as in alerts.yml."""


_BlockDumper.add_representer(
    str, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


def prometheus_rule(alerts_text: str) -> str:
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "scimbus", "labels": {"app.kubernetes.io/name": "scimbus"}},
        "spec": {"groups": yaml.safe_load(alerts_text)["groups"]},
    }
    return RULE_HEADER + yaml.dump(rule, Dumper=_BlockDumper, sort_keys=False, width=120)


def expected() -> dict[Path, str]:
    return {K8S_TEMPLATE: TEMPLATE.read_text(), K8S_RULE: prometheus_rule(ALERTS.read_text())}


def drifted() -> list[Path]:
    return [path for path, text in expected().items() if not path.exists() or path.read_text() != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a copy differs from its source")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted()
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from its source: run `make k8s-sync`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in expected().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
