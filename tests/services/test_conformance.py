"""The public SCIM conformance suites, strict, against the live stack: zero failures.

``scim2-tester`` (python-scim) and ``scim-sanity`` (strict mode) drive a stack started the
way ``make run`` starts one. The stack answers group PATCH with 200 and ignores unknown
member ids (``SCIM_GROUP_PATCH_STATUS=200``, ``SCIM_UNKNOWN_MEMBERS=ignore``): both suites
expect the generic RFC 7644 behaviour, while the defaults follow Entra's advice (204, and
a member id must name a resource), which ``test_entra_flows`` checks. The stack also
declares an extension schema in its config file, so the suites exercise one too (no
dateTime sub-attribute: scim2-tester 0.5.2 fills those with text its own model refuses,
before any request is sent; ``tests/libs/scim/test_extensions.py`` covers them).
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
ACME = "urn:ietf:params:scim:schemas:extension:acme:2.0:User"
CONFIG = f"""
[[schemas]]
id = "{ACME}"
resource_type = "User"
name = "AcmeUser"
description = "Badge data of Acme's door system"

[[schemas.attributes]]
name = "badgeNumber"
type = "integer"

[[schemas.attributes]]
name = "site"
canonical_values = ["north", "south"]

[[schemas.attributes]]
name = "clearance"
type = "complex"
sub_attributes = [{{ name = "level", type = "integer" }}, {{ name = "zone" }}]
"""


@pytest.fixture(scope="module")
def generic_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    config = tmp / "scimbus-test.toml"
    config.write_text(CONFIG)
    with running_stack(tmp / "var", extra_env={**GENERIC_RFC, "SCIM_CONFIG_FILE": str(config)}) as s:
        yield s


def test_a_configured_extension_is_published_stored_and_filterable(generic_stack):
    with generic_stack.client() as scim:
        schema_ids = [s["id"] for s in scim.get("/Schemas").json()["Resources"]]
        assert ACME in schema_ids
        assert scim.get(f"/Schemas/{ACME}").json()["attributes"][0] == {
            "name": "badgeNumber", "type": "integer", "multiValued": False, "description": "badgeNumber",
            "required": False, "mutability": "readWrite", "returned": "default", "uniqueness": "none"}
        user_type = scim.get("/ResourceTypes/User").json()
        assert {"schema": ACME, "required": False} in user_type["schemaExtensions"]
        created = scim.post("/Users", json={"userName": "badge-holder", ACME: {
            "badgeNumber": 4711, "site": "north", "clearance": {"level": 3, "zone": "lab"}}})
        assert created.status_code == 201, created.text
        assert created.json()[ACME]["clearance"]["level"] == 3 and ACME in created.json()["schemas"]
        for text in (f"{ACME}:badgeNumber gt 4000", f"{ACME}:clearance.level ge 3", f'{ACME}:site eq "NORTH"'):
            found = scim.get("/Users", params={"filter": text}).json()
            assert [r["userName"] for r in found["Resources"]] == ["badge-holder"], text
        assert scim.get("/Users", params={"filter": f"{ACME}:badgeNumber lt 4000"}).json()["totalResults"] == 0
        wrong = scim.post("/Users", json={"userName": "bad-badge", ACME: {"badgeNumber": "many"}})
        assert wrong.status_code == 400 and wrong.json()["scimType"] == "invalidValue"


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
    assert failures == []
    assert len(results) > 100


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
