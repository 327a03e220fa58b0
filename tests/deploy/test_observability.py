"""Dashboards and alert rules read only metrics the code exports, so every panel has data.

The exported names come from the metric objects (imported, then collected), not from a
list written here; the test of a broken copy shows a panel on an unknown metric fails.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from libs.metrics.deliveries import DeliveryCollector
from libs.metrics.gateway import GatewayStatusCollector
from libs.metrics.queue import QueueDepthCollector
from tests.support.deploy_checks import (
    ROOT, collector_series_names, dashboard_problems, exported_metric_names, family_series_names, promql_metrics,
    promtool_problems, rule_problems,
)

DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
ALERTS = ROOT / "deploy/prometheus/alerts.yml"

@pytest.fixture(scope="module")
def exported(redis_url) -> set[str]:
    from redis import Redis

    redis = Redis.from_url(redis_url)
    names = (exported_metric_names() | collector_series_names(QueueDepthCollector(redis, ["scim-writes"]))
             | collector_series_names(DeliveryCollector(lambda: {"any": (0.0, 0)}))
             | {name for family in GatewayStatusCollector("http://gateway/stub_status").describe()
                for name in family_series_names(family)})
    redis.close()
    return names


pytestmark = pytest.mark.redis


def test_the_exported_names_include_every_metric_the_services_define(exported):
    assert {"scim_http_requests_total", "scim_http_request_duration_seconds_bucket", "scim_jobs_total",
            "scim_job_duration_seconds_bucket", "scim_job_failures_total", "scim_queue_depth",
            "scim_workers_alive", "scim_deliveries_total", "scim_delivery_lag_seconds", "scim_dead_letters"} <= exported


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_dashboard_panel_reads_a_metric_the_code_exports(path, exported):
    assert dashboard_problems(path, exported) == []


def test_the_dashboard_shows_what_operators_watch():
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/scimbus.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for name in ("scim_http_requests_total", "scim_http_request_duration_seconds_bucket", "scim_queue_depth",
                 "scim_job_duration_seconds_bucket", "scim_workers_alive"):
        assert name in exprs
    error_panel = next(p for p in dashboard["panels"] if "40 %" in p["title"])
    steps = error_panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert {"color": "red", "value": 0.4} in steps
    assert dashboard["uid"] and all(p["datasource"]["uid"] == "prometheus"
                                    for p in dashboard["panels"] if p["type"] != "row")


def test_a_dashboard_panel_on_a_metric_nobody_exports_is_caught(tmp_path, exported):
    broken = tmp_path / "scimbus.json"
    dashboard = json.loads(DASHBOARDS[0].read_text())
    dashboard["panels"][1]["targets"][0]["expr"] = "sum(rate(scim_http_request_total[5m]))"  # one letter off
    broken.write_text(json.dumps(dashboard))
    problems = dashboard_problems(broken, exported)
    assert problems == [f"scimbus.json: panel {dashboard['panels'][1]['title']!r} reads scim_http_request_total, "
                        "which the code does not export"]
    broken.write_text("{not json")
    assert dashboard_problems(broken, exported)[0].startswith("scimbus.json: not JSON")


def test_every_alert_rule_reads_a_metric_the_code_exports(exported):
    assert rule_problems(ALERTS, exported) == []


def test_the_alerts_cover_failures_queue_workers_dead_letters_and_lag():
    import yaml

    rules = {r["alert"]: r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    assert promql_metrics(rules["ScimNoWorkerAlive"]["expr"]) == {"scim_workers_alive"}
    assert promql_metrics(rules["ScimQueueBackingUp"]["expr"]) == {"scim_queue_depth"}
    assert "scim_http_requests_total" in promql_metrics(rules["ScimErrorRatioNearQuarantine"]["expr"])
    assert "ScimJobFailureRatioRising" in rules and "ScimConnectorDeadLetters" in rules and "ScimDeliveryLagHigh" in rules


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (deploy/setup.sh test installs Debian's prometheus)")


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    assert promtool_problems("rules", str(ALERTS)) == []


@needs_promtool
def test_promtool_rejects_a_broken_copy_of_the_alert_rules(tmp_path):
    broken = tmp_path / "alerts.yml"
    broken.write_text(ALERTS.read_text().replace("max(scim_workers_alive) == 0", "max(scim_workers_alive == 0"))
    problems = promtool_problems("rules", str(broken))
    assert len(problems) == 1
    assert '"ScimNoWorkerAlive": could not parse expression' in problems[0]


@needs_promtool
def test_promtool_accepts_the_compose_prometheus_config(tmp_path):
    config = (ROOT / "deploy/prometheus/prometheus.yml").read_text()
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml")))
    assert promtool_problems("config", str(tmp_path / "prometheus.yml")) == []
    (tmp_path / "prometheus.yml").write_text(config.replace("dns_sd_configs", "dns_sd_config"))
    assert promtool_problems("config", str(tmp_path / "prometheus.yml"))


def test_the_grafana_provisioning_points_at_the_dashboards_and_the_prometheus_the_dashboards_use():
    import yaml

    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "prometheus"
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/scimbus.yml").read_text())
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts
    assert Path(ROOT / "deploy/grafana/dashboards").is_dir()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_have_unique_ids_and_do_not_overlap(path):
    panels = json.loads(path.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for x in range(box["x"], box["x"] + box["w"]):
            for y in range(box["y"], box["y"] + box["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps another panel"
                cells.add((x, y))
