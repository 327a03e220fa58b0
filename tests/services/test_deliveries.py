"""Downstream delivery through the running stack: a SQL application database and a signed
web hook receive an Entra sequence, survive an outage, and resync repairs hand-made drift."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from tests.services.conftest import unique
from tests.services.test_entra_flows import ENTERPRISE, PATCH_OP, create_group, create_user, patch
from tests.support.stack import ROOT, running_stack
from tests.support.targets import APP_SCHEMA, HookReceiver, app_engine, create_app_schema, sql_connector_toml

pytestmark = pytest.mark.stack

SECRET = "hook-secret-" + "y" * 20
FAST_RETRY = "retry = { base = 0.2, cap = 1.0, max_attempts = 1000 }"


def _config(tmp: Path, sql_url: str, hook_url: str, extra: str = "") -> Path:
    path = tmp / "scimbus.toml"
    path.write_text("[scimbus]\nsweep_interval = 0.5\n" + sql_connector_toml("appdb", sql_url, retry=FAST_RETRY) + f'''
[connectors.hook]
type = "webhook"
url = "{hook_url}"
secret = "{SECRET}"
timeout = 2
{FAST_RETRY}
[connectors.hook.users]
[connectors.hook.groups]
''' + extra)
    return path


def _scimbus(stack, *args: str) -> str:
    env = {"SCIM_VAR_DIR": str(stack.var_dir), "SCIM_CONFIG_FILE": str(stack.var_dir / "scimbus.toml"),
           "SCIM_REDIS_URL": f"redis://127.0.0.1:{stack.redis_port}/0", "PATH": "/usr/bin:/bin"}
    db = stack.var_dir / "database_url"
    if db.exists():
        env["SCIM_DATABASE_URL"] = db.read_text()
    out = subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _directory(scim) -> tuple[dict, dict]:
    users = {u["id"]: u for u in scim.get("/Users", params={"count": 1000}).json()["Resources"]}
    groups = {g["id"]: g for g in scim.get("/Groups", params={"count": 1000}).json()["Resources"]}
    return users, groups


def _sql_state(engine) -> tuple[dict, dict, set]:
    t = APP_SCHEMA.tables
    with engine.connect() as conn:
        users = {r.scim_id: r._asdict() for r in conn.execute(select(t["app_users"]))}
        groups = {r.scim_id: r.name for r in conn.execute(select(t["app_groups"]))}
        members = {(r.group_id, r.user_id) for r in conn.execute(select(t["app_memberships"]))}
    return users, groups, members


def _expected_sql(users: dict, groups: dict) -> tuple[dict, dict, set]:
    by_id = users
    exp_users = {}
    for u in users.values():
        ent = u.get(ENTERPRISE, {})
        manager = (ent.get("manager") or {}).get("value")
        exp_users[u["id"]] = {
            "login": u["userName"].lower(),
            "full_name": f"{u['name']['givenName']} {u['name']['familyName']}",
            "department": ent.get("department"),
            "manager_login": by_id[manager]["userName"].lower() if manager in by_id else None,
            "enabled": u.get("active", True),
        }
    exp_groups = {g["id"]: g["displayName"] for g in groups.values()}
    exp_members = {(g["id"], m["value"]) for g in groups.values() for m in g.get("members", [])}
    return exp_users, exp_groups, exp_members


def _converged(scim, engine, hook: HookReceiver) -> tuple[bool, str]:
    users, groups = _directory(scim)
    exp_users, exp_groups, exp_members = _expected_sql(users, groups)
    have_users, have_groups, have_members = _sql_state(engine)
    view = {k: {c: v[c] for c in exp_users.get(k, v) if c in v} for k, v in have_users.items()}
    if view != exp_users:
        return False, f"sql users differ: {view} != {exp_users}"
    if have_groups != exp_groups or have_members != exp_members:
        return False, f"sql groups differ: {have_groups} {have_members} != {exp_groups} {exp_members}"
    hooked = hook.state()
    want = {("User", i): u["meta"]["version"] for i, u in users.items()}
    want.update({("Group", i): g["meta"]["version"] for i, g in groups.items()})
    got = {k: v["resource"]["meta"]["version"] for k, v in hooked.items()}
    if got != want:
        return False, f"hook state differs: {got} != {want}"
    return True, ""


def wait_converged(scim, engine, hook, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        ok, why = _converged(scim, engine, hook)
        if ok:
            return
        time.sleep(0.3)
    raise AssertionError(why)


def entra_sequence(scim) -> None:
    """Users, a manager, groups and memberships, renames, a disable and deletes."""
    boss = create_user(scim, **{ENTERPRISE: {"department": "Ops"}})
    staff = [create_user(scim, **{ENTERPRISE: {"department": "Dev", "manager": {"value": boss["id"]}}})
             for _ in range(3)]
    team = create_group(scim)
    other = create_group(scim)
    assert patch(scim, f"/Groups/{team['id']}", {"op": "Add", "path": "members",
                                                 "value": [{"value": u["id"]} for u in staff + [boss]]}
                 ).status_code == 204
    assert patch(scim, f"/Groups/{other['id']}", {"op": "Add", "path": "members",
                                                  "value": [{"value": staff[0]["id"]}]}).status_code == 204
    renamed = f"{unique('renamed')}@contoso.com"
    assert patch(scim, f"/Users/{staff[1]['id']}", {"op": "Replace", "path": "userName", "value": renamed}
                 ).status_code == 200
    assert patch(scim, f"/Users/{staff[2]['id']}", {"op": "Replace", "path": "active", "value": "False"}
                 ).status_code == 200
    assert patch(scim, f"/Groups/{team['id']}", {"op": "Remove", "path": "members",
                                                 "value": [{"value": staff[2]["id"]}]}).status_code == 204
    assert patch(scim, f"/Groups/{team['id']}", {"op": "Replace", "path": "displayName",
                                                 "value": unique("team")}).status_code == 204
    assert scim.delete(f"/Users/{staff[0]['id']}").status_code == 204
    assert scim.delete(f"/Groups/{other['id']}").status_code == 204


@pytest.fixture
def targets(tmp_path):
    sql_url = f"sqlite:///{tmp_path / 'app.db'}"
    create_app_schema(sql_url)
    engine = app_engine(sql_url)
    with HookReceiver(SECRET) as hook:
        yield tmp_path, sql_url, engine, hook
    engine.dispose()


def test_an_entra_sequence_ends_with_every_target_holding_the_directory_state(targets):
    tmp, sql_url, engine, hook = targets
    stack_dir = tmp / "stack"
    stack_dir.mkdir()
    config = _config(stack_dir, sql_url, hook.url)
    with running_stack(stack_dir, extra_env={"SCIM_CONFIG_FILE": str(config)}) as stack, stack.client() as scim:
        entra_sequence(scim)
        wait_converged(scim, engine, hook)
        assert hook.bad_signatures == 0
        status = _scimbus(stack, "deliveries")
        assert "appdb (sql): 0 pending" in status and "hook (webhook): 0 pending" in status, status
