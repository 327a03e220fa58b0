"""The public SCIM conformance suites, strict, against the live stack: zero failures.

``scim2-tester`` (python-scim) and ``scim-sanity`` (strict mode) drive a stack started the
way ``make run`` starts one. The stack answers group PATCH with 200 and ignores unknown
member ids (``SCIM_GROUP_PATCH_STATUS=200``, ``SCIM_UNKNOWN_MEMBERS=ignore``): both suites
expect the generic RFC 7644 behaviour, while the defaults follow Entra's advice (204, and
a member id must name a resource), which ``test_entra_flows`` checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import running_stack

pytestmark = pytest.mark.stack

GENERIC_RFC = {"SCIM_GROUP_PATCH_STATUS": "200", "SCIM_UNKNOWN_MEMBERS": "ignore"}


@pytest.fixture(scope="module")
def generic_stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("conformance"), extra_env=GENERIC_RFC) as s:
        yield s


def test_scim2_tester_finds_no_error(generic_stack):
    import httpx2
    from scim2_client.engines.httpx2 import SyncSCIMClient
    from scim2_tester import Status, check_server

    http = httpx2.Client(base_url=generic_stack.url, timeout=60,
                         headers={"Authorization": f"Bearer {generic_stack.token}"})
    with http:
        results = check_server(SyncSCIMClient(http))
    failures = [f"{r.status.name} {r.title} ({r.resource_type}): {r.reason}" for r in results
                if r.status not in (Status.SUCCESS, Status.SKIPPED)]
    assert len(results) > 100
    assert failures == []


def test_scim_sanity_strict_probe_passes(generic_stack):
    scim_sanity = Path(sys.executable).with_name("scim-sanity")
    run = subprocess.run(
        [str(scim_sanity), "probe", generic_stack.url, "--token", generic_stack.token, "--strict",
         "--i-accept-side-effects", "--json-output", "--timeout", "60"],
        capture_output=True, text=True, timeout=300,
    )
    report = json.loads(run.stdout)
    assert report["mode"] == "strict"
    bad = [r for r in report["results"] if r["status"] not in ("pass", "skip")]
    assert bad == [], run.stdout[-4000:]
    assert report["summary"]["passed"] >= 25
    assert run.returncode == 0
