"""The SCIM relay connector: one scimbus stack relays to a second one, a real SCIM server; and a
deletion that finds by externalId what an attempt whose answer was lost created there."""

from __future__ import annotations

import time
import uuid

import pytest

from libs.connectors.base import Previous
from libs.connectors.registry import build_connector
from tests.services.conftest import unique
from tests.services.test_entra_flows import create_group, create_user, patch
from tests.services.deliverer.test_deliveries import _scimbus
from tests.support.stack import running_stack

pytestmark = pytest.mark.stack


def _remote_state(remote) -> tuple[dict, dict]:
    users = {u["externalId"]: u for u in remote.get("/Users", params={"count": 1000}).json()["Resources"]}
    by_remote_id = {u["id"]: ext for ext, u in users.items()}
    groups = {g["externalId"]: (g["displayName"], sorted(by_remote_id[m["value"]] for m in g.get("members", [])))
              for g in remote.get("/Groups", params={"count": 1000}).json()["Resources"]}
    return {ext: u["userName"] for ext, u in users.items()}, groups


def _local_state(scim) -> tuple[dict, dict]:
    users = {u["id"]: u["userName"] for u in scim.get("/Users", params={"count": 1000}).json()["Resources"]}
    groups = {g["id"]: (g["displayName"], sorted(m["value"] for m in g.get("members", [])))
              for g in scim.get("/Groups", params={"count": 1000}).json()["Resources"]}
    return users, groups


def test_changes_are_relayed_to_another_scim_endpoint_keeping_the_id_mapping(tmp_path):
    with running_stack(tmp_path / "remote") as remote_stack:
        (tmp_path / "local").mkdir()
        config = tmp_path / "local" / "scimbus.toml"  # where the operator commands look for it
        config.write_text(f'''[scimbus]
sweep_interval = 0.5
[connectors.relay]
type = "scim"
url = "{remote_stack.url}"
token = "{remote_stack.token}"
timeout = 5
retry = {{ base = 0.2, cap = 1.0 }}
[connectors.relay.users]
[connectors.relay.groups]
''')
        with running_stack(tmp_path / "local", extra_env={"SCIM_CONFIG_FILE": str(config)}) as stack, \
                stack.client() as scim, remote_stack.client() as remote:
            users = [create_user(scim) for _ in range(3)]
            group = create_group(scim)
            assert patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members",
                                                          "value": [{"value": u["id"]} for u in users]}
                         ).status_code == 204
            assert patch(scim, f"/Users/{users[1]['id']}", {"op": "Replace", "path": "userName",
                                                            "value": f"{unique('renamed')}@contoso.com"}
                         ).status_code == 200
            assert scim.delete(f"/Users/{users[2]['id']}").status_code == 204
            deadline = time.monotonic() + 30
            while _remote_state(remote) != _local_state(scim) and time.monotonic() < deadline:
                time.sleep(0.3)
            assert _remote_state(remote) == _local_state(scim)
            # The remote's ids are its own; ours travel as externalId.
            remote_ids = {u["id"] for u in remote.get("/Users").json()["Resources"]}
            assert not remote_ids & {u["id"] for u in users}
            assert "created 0, changed 0, removed 0" in _scimbus(stack, "resync", "relay", "--dry-run")
            # Drift made on the remote by hand is found and repaired.
            victim = next(u for u in remote.get("/Users").json()["Resources"] if u["externalId"] == users[0]["id"])
            assert remote.delete(f"/Users/{victim['id']}").status_code == 204
            assert "would have created 1" in _scimbus(stack, "resync", "relay", "--dry-run")
            assert "created 1" in _scimbus(stack, "resync", "relay")
            assert _remote_state(remote)[0] == _local_state(scim)[0]

            # The remote's own users are not ours: left by resync, removed with --prune-foreign; one
            # that holds a local user's userName is a conflict, left, until --adopt takes it over.
            theirs = remote.post("/Users", json={"userName": unique("theirs")}).json()
            victim = next(u for u in remote.get("/Users").json()["Resources"] if u["externalId"] == users[1]["id"])
            assert remote.delete(f"/Users/{victim['id']}").status_code == 204
            squatter = remote.post("/Users", json={"userName": victim["userName"]}).json()
            out = _scimbus(stack, "resync", "relay")
            assert f"leave foreign User remote:{theirs['id']}" in out and f"leave conflicting User {users[1]['id']}" \
                in out, out
            assert remote.get(f"/Users/{theirs['id']}").status_code == 200
            out = _scimbus(stack, "resync", "relay", "--adopt", "--prune-foreign")
            assert "created 1" in out and "pruned 1" in out, out  # the squatter is ours now, not pruned
            assert remote.get(f"/Users/{theirs['id']}").status_code == 404
            assert remote.get(f"/Users/{squatter['id']}").json()["externalId"] == users[1]["id"]
            assert _remote_state(remote)[0] == _local_state(scim)[0]


def test_a_deletion_finds_a_resource_recreated_under_a_remote_id_the_ledger_never_learnt(tmp_path):
    with running_stack(tmp_path / "remote") as remote_stack, remote_stack.client() as remote:
        relay = build_connector("relay", {"type": "scim", "url": remote_stack.url, "token": remote_stack.token,
                                          "users": {}})
        ada = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": str(uuid.uuid4()),
               "userName": f"{unique('ada')}@contoso.com"}
        fields = relay.render("User", ada, lambda kind, ids: {})
        recorded = relay.apply("User", ada, fields, Previous(None, False), lambda kind, ids: {})
        assert remote.delete(f"/Users/{recorded}").status_code == 204  # the remote lost it
        # Delivered again, it is created anew under another id; that answer is lost, so the
        # ledger still holds the first id.
        assert relay.apply("User", ada, fields, Previous(recorded, True), lambda kind, ids: {}) != recorded
        relay.remove("User", ada["id"], Previous(recorded, True))
        found = remote.get("/Users", params={"filter": f'externalId eq "{ada["id"]}"'}).json()
        assert found["totalResults"] == 0
        relay.close()
