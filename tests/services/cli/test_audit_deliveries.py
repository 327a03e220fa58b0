"""``scimbus audit --resource`` / ``--request`` tell, per change, what became of it at each
connector (issue 18): delivered and when, failing with the last error, or dead-lettered.

Three web hooks receive the same users: one answers 200, one 503 (retryable: failing),
one 410 (permanent: dead-lettered). The command runs as an operator runs it, against the
running stack's database.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.services.conftest import unique
from tests.services.test_entra_flows import create_user, patch
from tests.support.stack import running_stack
from tests.support.targets import HookReceiver

pytestmark = pytest.mark.stack

SECRET = "hook-secret-" + "z" * 20


def _hook(name: str, url: str, retry: str) -> str:
    return f'''
[connectors.{name}]
type = "webhook"
url = "{url}"
secret = "{SECRET}"
timeout = 2
retry = {retry}
[connectors.{name}.users]
'''


def _audit(stack, *args: str) -> list[dict]:
    return [json.loads(line) for line in stack.scimbus("audit", "--json", *args).stdout.splitlines()]


def _outcomes(entry: dict) -> dict[str, dict]:
    return {o["connector"]: o for o in entry["deliveries"]}


def _settled(entries: list[dict]) -> bool:
    return len(entries) == 2 and all(
        (o := _outcomes(e))["good"]["status"] == "delivered" and o["flaky"]["status"] == "failing"
        and o["gone"]["status"] == "dead-lettered" for e in entries)


def test_audit_shows_each_connectors_outcome_of_each_change(tmp_path):
    with HookReceiver(SECRET) as good, HookReceiver(SECRET) as flaky, HookReceiver(SECRET) as gone:
        flaky.status, gone.status = 503, 410
        config = tmp_path / "scimbus.toml"
        config.write_text("[scimbus]\nsweep_interval = 0.5\n"
                          + _hook("good", good.url, "{ base = 0.2, cap = 1.0, max_attempts = 1000 }")
                          + _hook("flaky", flaky.url, "{ base = 0.2, cap = 1.0, max_attempts = 1000 }")
                          + _hook("gone", gone.url, "{ base = 0.2, cap = 1.0, max_attempts = 1000 }"))
        stack_dir = tmp_path / "stack"
        stack_dir.mkdir()
        with running_stack(stack_dir, extra_env={"SCIM_CONFIG_FILE": str(config)}) as stack, \
                stack.client() as scim:
            started = datetime.now(timezone.utc) - timedelta(seconds=1)
            user = create_user(scim)
            renamed = patch(scim, f"/Users/{user['id']}",
                            {"op": "Replace", "path": "userName", "value": f"{unique('renamed')}@contoso.com"})
            assert renamed.status_code == 200
            request_id = renamed.headers["X-Request-Id"]

            deadline = time.monotonic() + 90
            while not _settled(entries := _audit(stack, "--resource", user["id"])):
                assert time.monotonic() < deadline, json.dumps(entries, indent=1)
                time.sleep(0.5)

            created, replaced = entries
            assert (created["op"], replaced["op"]) == ("create", "patch")
            for entry in entries:
                o = _outcomes(entry)
                assert set(o) == {"good", "flaky", "gone"}
                assert started <= datetime.fromisoformat(o["good"]["at"]) <= datetime.now(timezone.utc)
                assert "503" in o["flaky"]["detail"] and o["flaky"]["attempts"] >= 1
                assert "410" in o["gone"]["detail"] and o["gone"]["at"]
            # the rename reached the good hook after the create did
            assert _outcomes(created)["good"]["at"] <= _outcomes(replaced)["good"]["at"]

            # --request: that write alone, with its outcomes; the plain text says the same
            (by_request,) = _audit(stack, "--request", request_id)
            assert by_request["change_seq"] == replaced["change_seq"]
            assert _outcomes(by_request)["flaky"]["status"] == "failing"
            text = stack.scimbus("audit", "--request", request_id).stdout
            assert "-> good: delivered at " in text
            assert "-> flaky: failing after " in text and "503" in text
            assert "-> gone: dead-lettered at " in text

            # the failing hook recovers: the audit then shows both changes delivered to it
            flaky.status = 200
            deadline = time.monotonic() + 60
            while any(_outcomes(e)["flaky"]["status"] != "delivered" for e in _audit(stack, "--resource", user["id"])):
                assert time.monotonic() < deadline
                time.sleep(0.5)
