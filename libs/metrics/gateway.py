"""The gateway's request and connection counts, read from nginx's stub_status page at scrape time.

Open-source nginx exports no Prometheus metrics; its stub_status module (in the official and
Debian builds alike) answers a few plain-text counters. A role of ours reads that page when
Prometheus scrapes the role, so the gateway needs no exporter image of its own. Parsing the
four lines is simpler than adding nginx-prometheus-exporter, which is a separate Go program.
"""

from __future__ import annotations

import re

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_STATUS = re.compile(r"Active connections:\s*(\d+)\s+server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)\s+"
                     r"Reading:\s*(\d+)\s+Writing:\s*(\d+)\s+Waiting:\s*(\d+)")


class GatewayStatusCollector:
    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url, self.timeout = url, timeout

    def describe(self):
        return self._families()  # never the page: registering must not wait on the gateway

    def _families(self) -> tuple[CounterMetricFamily, CounterMetricFamily, GaugeMetricFamily]:
        return (CounterMetricFamily("scim_gateway_requests", "Requests the gateway (nginx) has served."),
                CounterMetricFamily("scim_gateway_connections_accepted", "Client connections the gateway accepted."),
                GaugeMetricFamily("scim_gateway_connections", "Client connections of the gateway now, by state "
                                  "(reading a request, writing an answer, idle keep-alive).", labels=["state"]))

    def collect(self):
        try:
            found = _STATUS.search(httpx.get(self.url, timeout=self.timeout).text)
        except httpx.HTTPError:
            found = None
        if found is None:
            return  # gateway away: the series are absent, as a failed scrape's would be
        requests, accepted, connections = self._families()
        _, accepts, _, served, reading, writing, waiting = (int(v) for v in found.groups())
        requests.add_metric([], served)
        accepted.add_metric([], accepts)
        for state, value in (("reading", reading), ("writing", writing), ("waiting", waiting)):
            connections.add_metric([state], value)
        yield from (requests, accepted, connections)
