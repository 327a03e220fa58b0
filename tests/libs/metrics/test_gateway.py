"""The gateway's counts, read from a real nginx serving compose's stub_status template."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest

from libs.metrics.gateway import GatewayStatusCollector
from services.runtime.local_run import render_template
from tests.support.deploy_checks import ROOT, nginx_binary
from tests.support.servers import free_port, wait_for_port

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)

TEMPLATE = ROOT / "deploy/nginx/compose/status.conf.template"


@pytest.fixture
def status_url(tmp_path) -> Iterator[str]:
    port = free_port()
    (tmp_path / "status.conf").write_text(render_template(TEMPLATE.read_text(), {"SCIM_GATEWAY_STATUS_PORT": str(port)}))
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\npid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  client_body_temp_path {tmp_path}/body;\n  include {tmp_path}/status.conf;\n}}\n")
    nginx = subprocess.Popen([nginx_binary(), "-e", "stderr", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")])
    try:
        wait_for_port(port, proc=nginx)
        yield f"http://127.0.0.1:{port}/stub_status"
    finally:
        nginx.terminate()
        nginx.wait(10)


def _samples(collector) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}


def test_the_requests_nginx_served_are_exported_with_its_connections(status_url):
    for _ in range(2):
        assert httpx.get(status_url.replace("/stub_status", "/elsewhere")).status_code == 404
    samples = _samples(GatewayStatusCollector(status_url))
    # The two 404s, and the read of the status page itself; one more connection, wait_for_port's.
    assert samples[("scim_gateway_requests_total", ())] == 3
    assert samples[("scim_gateway_connections_accepted_total", ())] == 4
    assert samples[("scim_gateway_connections", (("state", "writing"),))] == 1  # the status read
    assert {labels for name, labels in samples if name == "scim_gateway_connections"} == {
        (("state", s),) for s in ("reading", "writing", "waiting")}


def test_a_gateway_that_does_not_answer_leaves_the_series_out():
    assert _samples(GatewayStatusCollector(f"http://127.0.0.1:{free_port()}/stub_status", timeout=0.5)) == {}
