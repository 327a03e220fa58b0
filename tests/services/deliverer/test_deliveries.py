"""Downstream delivery through the running stack: a SQL application database and a signed
web hook receive an Entra sequence, survive an outage, and resync repairs hand-made drift."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select, update

from tests.services.conftest import unique
from tests.services.test_entra_flows import ENTERPRISE, create_group, create_user, patch
from tests.support.ldap import SUFFIX, ldap_connector_toml, slapd_server
from tests.support.stack import ROOT, running_stack
from tests.support.targets import APP_SCHEMA, HookReceiver, app_engine, create_app_schema, sql_connector_toml

pytestmark = pytest.mark.stack

SECRET = "hook-secret-" + "y" * 20
FAST_RETRY = "retry = { base = 0.2, cap = 1.0, max_attempts = 1000 }"


def _config(tmp: Path, sql_url: str, hook_url: str, ldap_url: str) -> Path:
    path = tmp / "scimbus.toml"
    path.write_text("[scimbus]\nsweep_interval = 0.5\n" + sql_connector_toml("appdb", sql_url, retry=FAST_RETRY)
                    + ldap_connector_toml("corp", ldap_url, retry=FAST_RETRY) + f'''
[connectors.hook]
type = "webhook"
url = "{hook_url}"
secret = "{SECRET}"
timeout = 2
{FAST_RETRY}
[connectors.hook.users]
[connectors.hook.groups]
''')
    return path


def _scimbus(stack, *args: str) -> str:
    env = {"SCIM_VAR_DIR": str(stack.var_dir), "SCIM_CONFIG_FILE": str(stack.var_dir / "scimbus.toml"),
           "SCIM_REDIS_URL": stack.redis_url, "PATH": "/usr/bin:/bin"}
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


def _ldap_state(slapd) -> tuple[dict, dict]:
    conn = slapd.connection()
    conn.search(f"ou=people,{SUFFIX}", "(objectClass=inetOrgPerson)",
                attributes=["uid", "employeeNumber", "departmentNumber", "manager"])
    users = {str(e.employeeNumber): (e.entry_dn.lower(), e.manager.value.lower() if e.manager else None,
                                     e.departmentNumber.value if e.departmentNumber else None) for e in conn.entries}
    conn.search(f"ou=groups,{SUFFIX}", "(objectClass=groupOfNames)", attributes=["cn", "member"])
    groups = {str(e.cn): sorted(m.lower() for m in e.member.values if not m.lower().startswith("cn="))
              for e in conn.entries}
    conn.unbind()
    return users, groups


def _ldap_converged(scim, slapd) -> tuple[bool, str]:
    users, groups = _directory(scim)
    dn = {i: f"uid={u['userName'].lower()},ou=people,{SUFFIX}" for i, u in users.items()}
    want_users = {i: (dn[i], dn.get((u.get(ENTERPRISE, {}).get("manager") or {}).get("value")),
                      u.get(ENTERPRISE, {}).get("department")) for i, u in users.items()}
    want_groups = {g["displayName"]: sorted(dn[m["value"]] for m in g.get("members", [])) for g in groups.values()}
    have_users, have_groups = _ldap_state(slapd)
    if (have_users, have_groups) != (want_users, want_groups):
        return False, f"ldap differs: {have_users} {have_groups} != {want_users} {want_groups}"
    return True, ""


def wait_converged(scim, engine, hook, slapd=None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline:
        ok, why = _converged(scim, engine, hook)
        if ok and slapd is not None:
            ok, why = _ldap_converged(scim, slapd)
        if ok:
            return
        time.sleep(0.3)
    raise AssertionError(why)


def wait_idle(stack, timeout: float = 30) -> None:
    """No delivery queued or running (re-deliveries of reports may follow convergence)."""
    from rq import Queue
    from rq.registry import StartedJobRegistry

    queue = Queue("scim-deliveries", connection=stack.redis())
    deadline = time.monotonic() + timeout
    while queue.count or StartedJobRegistry(queue=queue).count:
        assert time.monotonic() < deadline, "deliveries still running"
        time.sleep(0.2)


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
    # The manager's rename reaches the reports' manager fields (login, DN) too.
    assert patch(scim, f"/Users/{boss['id']}", {"op": "Replace", "path": "userName",
                                                "value": f"{unique('boss')}@contoso.com"}).status_code == 200
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
    with HookReceiver(SECRET) as hook, slapd_server(tmp_path / "slapd") as slapd:
        stack_dir = tmp_path / "stack"
        stack_dir.mkdir()
        config = _config(stack_dir, sql_url, hook.url, slapd.url)
        yield stack_dir, config, engine, hook, slapd
    engine.dispose()


def test_an_entra_sequence_ends_with_every_target_holding_the_directory_state(targets):
    stack_dir, config, engine, hook, slapd = targets
    with running_stack(stack_dir, extra_env={"SCIM_CONFIG_FILE": str(config)}) as stack, stack.client() as scim:
        entra_sequence(scim)
        wait_converged(scim, engine, hook, slapd)
        assert hook.bad_signatures == 0
        status = _scimbus(stack, "deliveries")
        for name in ("appdb (sql)", "corp (ldap)", "hook (webhook)"):
            assert f"{name}: 0 pending" in status and "0 dead-lettered" in status, status
        for name in ("appdb", "corp"):
            assert "created 0, changed 0, removed 0" in _scimbus(stack, "resync", name, "--dry-run")
        metrics = httpx.get(f"http://127.0.0.1:{stack.ports['SCIM_DELIVERER_METRICS_PORT']}/metrics").text
        for name in ("appdb", "corp", "hook"):
            assert f'scim_deliveries_total{{connector="{name}",outcome="delivered"}}' in metrics, metrics
            assert f'scim_delivery_lag_seconds{{connector="{name}"}} 0.0' in metrics, metrics
            assert f'scim_dead_letters{{connector="{name}"}} 0.0' in metrics, metrics


def test_targets_down_during_writes_receive_everything_once_in_order_when_back(targets):
    stack_dir, config, engine, hook, slapd = targets
    with running_stack(stack_dir, extra_env={"SCIM_CONFIG_FILE": str(config)}) as stack, stack.client() as scim:
        boss = create_user(scim)
        wait_converged(scim, engine, hook, slapd)
        # The hook refuses at once; LDAP is gone. (A hook that hangs past the timeout may apply
        # an event its sender saw fail: sent again, it arrives twice, so "once" holds for refusals
        # only; that a deletion still follows such an event is test_fanout's.)
        hook.status = 503
        slapd.stop()
        waits: list[float] = []

        def timed(call, *args, **kwargs):
            started = time.monotonic()
            try:
                return call(*args, **kwargs)
            finally:
                waits.append(time.monotonic() - started)

        users = [timed(create_user, scim, **{ENTERPRISE: {"manager": {"value": boss["id"]}}}) for _ in range(4)]
        team = timed(create_group, scim)
        for round_ in range(3):
            for u in users:
                r = timed(patch, scim, f"/Users/{u['id']}", {"op": "Replace", "path": "displayName",
                                                             "value": f"round {round_}"})
                assert r.status_code == 200, r.text
        assert timed(patch, scim, f"/Groups/{team['id']}", {"op": "Add", "path": "members",
                                                            "value": [{"value": u["id"]} for u in users]}
                     ).status_code == 204
        assert timed(scim.delete, f"/Users/{users[0]['id']}").status_code == 204
        # No write waited on a target (a delivery attempt waits up to its timeout, 60 s).
        assert max(waits) < 2.0, f"a SCIM write took {max(waits):.1f} s while its targets were down"
        deadline = time.monotonic() + 30  # several failed attempts each, backing off
        while not ("failing" in (status := _scimbus(stack, "deliveries"))
                   and ("503" in status or "Unavailable" in status)):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        hook.status = 200
        slapd.start()
        wait_converged(scim, engine, hook, slapd)
        # Nothing older overwrote newer: each resource's events arrive in increasing seq order.
        seen: dict = {}
        for event in hook.events:
            key = (event["resourceType"], event["id"])
            assert event["seq"] > seen.get(key, 0), f"older event after newer for {key}"
            seen[key] = event["seq"]
        assert "0 dead-lettered" in _scimbus(stack, "deliveries", "--connector", "hook")

        # A receiver that refuses an event (4xx) dead-letters it with the reason; once fixed,
        # the operator re-queues it and it arrives.
        hook.status = 400
        late = create_user(scim)
        deadline = time.monotonic() + 20
        while "1 dead-lettered" not in (status := _scimbus(stack, "deliveries", "--connector", "hook")):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert f"User {late['id']}" in status and "Rejected: web hook answered 400" in status, status
        hook.status = 200
        assert "1 resource(s) re-queued" in _scimbus(stack, "deliveries", "retry", "hook")
        wait_converged(scim, engine, hook, slapd)
        assert "0 dead-lettered" in _scimbus(stack, "deliveries", "--connector", "hook")


def test_hand_made_drift_is_reported_by_the_dry_run_and_repaired_by_resync(targets):
    stack_dir, config, engine, hook, slapd = targets
    with running_stack(stack_dir, extra_env={"SCIM_CONFIG_FILE": str(config)}) as stack, stack.client() as scim:
        entra_sequence(scim)
        wait_converged(scim, engine, hook, slapd)
        wait_idle(stack)
        users, _ = _directory(scim)
        gone, edited = sorted(users)[:2]
        deleted = _deleted_user(stack)  # deleted from the directory, and from the targets
        t = APP_SCHEMA.tables
        with engine.begin() as conn:
            conn.execute(delete(t["app_users"]).where(t["app_users"].c.scim_id == gone))
            conn.execute(update(t["app_users"]).where(t["app_users"].c.scim_id == edited).values(login="hacked"))
            conn.execute(t["app_users"].insert().values(scim_id="stray", login="stray", enabled=True))  # the app's own
            conn.execute(t["app_users"].insert().values(scim_id=deleted, login="back", enabled=True))  # ours, restored
        ldap = slapd.connection()
        dn = f"uid={users[edited]['userName'].lower()},ou=people,{SUFFIX}"
        from ldap3 import MODIFY_REPLACE
        assert ldap.modify(dn, {"departmentNumber": [(MODIFY_REPLACE, ["Sabotage"])]})
        assert ldap.add(f"uid=local.admin,ou=people,{SUFFIX}", ["inetOrgPerson"], {"cn": "Local", "sn": "Admin"})
        ldap.unbind()

        dry = _scimbus(stack, "resync", "appdb", "--dry-run")
        assert f"would create User {gone}" in dry and f"would change User {edited} (login)" in dry, dry
        assert f"would remove User {deleted}" in dry, dry
        assert "leave foreign User stray (anchor stray is no resource of ours)" in dry, dry
        assert "would have created 1, changed 1, removed 1; left 0 conflicting" in dry and "1 foreign" in dry, dry
        assert "would change User" in _scimbus(stack, "resync", "corp", "--dry-run")
        assert _sql_state(engine)[0].get(gone) is None  # the dry run changed nothing

        # Without --prune-foreign, what is not ours stays, in the database and in the directory.
        assert "created 1, changed 1, removed 1; left 0 conflicting" in _scimbus(stack, "resync", "appdb")
        assert "stray" in _sql_state(engine)[0] and deleted not in _sql_state(engine)[0]
        corp = _scimbus(stack, "resync", "corp")
        assert "changed 1" in corp and f"leave foreign User uid=local.admin,ou=people,{SUFFIX.lower()} (no anchor)" \
            in corp, corp
        assert _ldap_entry_exists(slapd, f"uid=local.admin,ou=people,{SUFFIX}")
        assert "pruned 1" in _scimbus(stack, "resync", "appdb", "--prune-foreign")
        assert "pruned 1" in _scimbus(stack, "resync", "corp", "--prune-foreign")
        assert "stray" not in _sql_state(engine)[0]
        assert not _ldap_entry_exists(slapd, f"uid=local.admin,ou=people,{SUFFIX}")
        wait_converged(scim, engine, hook, slapd, timeout=5)
        for name in ("appdb", "corp"):
            assert "created 0, changed 0, removed 0" in _scimbus(stack, "resync", name, "--dry-run")

        # An entry made by hand where a user belongs is a conflict: left, until --adopt.
        victim = users[edited]
        dn = f"uid={victim['userName'].lower()},ou=people,{SUFFIX}"
        ldap = slapd.connection()
        assert ldap.delete(dn) and ldap.add(dn, ["inetOrgPerson"], {"cn": "Someone Else", "sn": "Else"})
        ldap.unbind()
        assert f"leave conflicting User {dn.lower()} (no anchor)" in _scimbus(stack, "resync", "corp"), dn
        assert "adopted 1" in _scimbus(stack, "resync", "corp", "--adopt")
        wait_converged(scim, engine, hook, slapd, timeout=5)


def _deleted_user(stack) -> str:
    """The id of a user the Entra sequence deleted (the ledger of appdb knows it)."""
    from sqlalchemy import text

    from libs.config import load_settings
    from libs.store.session import create_engine_from_url

    engine = create_engine_from_url(load_settings(stack.env).database)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT resource_id FROM delivery_state WHERE connector = 'appdb' "
                                "AND resource_type = 'User' AND present = :no"), {"no": False}).first()
    engine.dispose()
    assert row is not None
    return row.resource_id


def _ldap_entry_exists(slapd, dn: str) -> bool:
    conn = slapd.connection()
    found = conn.search(dn, "(objectClass=*)", "BASE")
    conn.unbind()
    return found


def _deliverer_pids(stack) -> list[int]:
    from rq import Queue, Worker

    redis = stack.redis()
    return [w.pid for w in Worker.all(connection=redis, queue=Queue("scim-deliveries", connection=redis)) if w.pid]


@pytest.mark.slow
def test_deliverers_killed_mid_delivery_still_converge(targets):
    stack_dir, config, engine, hook, slapd = targets
    hook.delay = 0.1  # keep deliveries in flight when the kills land
    env = {"SCIM_CONFIG_FILE": str(config), "SCIM_DELIVERY_TIMEOUT": "5", "SCIM_DELIVERER_PROCESSES": "2"}
    with running_stack(stack_dir, extra_env=env) as stack, stack.client() as scim:
        killed = 0
        for round_ in range(3):
            users = [create_user(scim) for _ in range(5)]
            group = create_group(scim)
            assert patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members",
                                                          "value": [{"value": u["id"]} for u in users]}
                         ).status_code == 204
            assert scim.delete(f"/Users/{users[0]['id']}").status_code == 204
            for pid in _deliverer_pids(stack):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:  # killed last round, still registered until its TTL
                    pass
            time.sleep(1)
        assert killed >= 3
        wait_converged(scim, engine, hook, slapd, timeout=120)
        assert "0 dead-lettered" in _scimbus(stack, "deliveries", "--connector", "hook")
