"""The delivery loop over a real store and a real SQL target: versions, retries with
backoff, dead letters with their reason, operator retry, and the sweeper's work list; and
over a real web hook and a real slapd, deletions that follow an attempt whose answer was lost."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import tomllib
import uuid

import pytest
from sqlalchemy import select

from libs.config import Settings
from libs.connectors.registry import build_connector
from libs.scim.schemas import USERS
from libs.store import deliveries as ledger
from libs.store.deliveries import ResourceKey
from libs.store.directory import DirectoryStore
from services.deliverer.fanout import DeliveryContext, deliver_now
from tests.support.ldap import SUFFIX, is_rename, ldap_connector_toml, slapd_server
from tests.support.relay import LossyRelay
from tests.support.targets import APP_SCHEMA, HookReceiver, app_engine, create_app_schema, sql_connector_toml

pytestmark = pytest.mark.db


@pytest.fixture
def setup(engine, tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_app_schema(url)
    spec = tomllib.loads(sql_connector_toml("appdb", url, retry="retry = { base = 0.01, cap = 0.02, "
                                                                 "max_attempts = 3 }"))["connectors"]["appdb"]
    connector = build_connector("appdb", spec)
    ctx = DeliveryContext(Settings(), DirectoryStore(engine), None, {"appdb": connector})
    target = app_engine(url)
    yield ctx, connector, target
    target.dispose()
    connector.close()


def _write(store: DirectoryStore, id: str, user_name: str, *, new: bool) -> None:
    doc = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name, "name": {"givenName": "A", "familyName": "B"}}
    with store.transaction() as conn:
        if new:
            stored = store.insert_resource(conn, "default", USERS, id, doc)
        else:
            current = store.load(conn, "default", USERS, id, lock=True)
            stored = store.update_resource(conn, USERS, current, doc)
        store.record(conn, [{"app": "default", "job_id": uuid.uuid4().hex, "result": {}, "request_id": None,
                             "change": {"resource_type": "User", "resource_id": id,
                                        "op": "create" if new else "replace", "version": stored.version}}])


def _logins(target) -> list[str]:
    return [r.login for r in target.connect().execute(select(APP_SCHEMA.tables["app_users"].c.login))]


def test_a_delivery_sends_the_current_state_once_and_a_replay_changes_nothing(setup):
    ctx, connector, target = setup
    id = str(uuid.uuid4())
    key = ResourceKey("default", "User", id)
    _write(ctx.store, id, "first", new=True)
    _write(ctx.store, id, "second", new=False)
    assert deliver_now(ctx, connector, key) == "delivered"
    assert _logins(target) == ["second"]
    assert deliver_now(ctx, connector, key) == "skipped"  # the change is handled: a replay is a no-op
    with ctx.store.engine.connect() as conn:
        state = ledger.load_state(conn, "appdb", key)
        assert (state.delivered_version, state.present) == (2, True)
        assert ledger.pending(conn, "appdb", "default", ("User",)) == []


def test_a_refused_row_is_dead_lettered_with_its_reason_and_retried_on_request(setup):
    ctx, connector, target = setup
    b = str(uuid.uuid4())
    with target.begin() as conn:  # the application already has a login "taken" of its own
        conn.execute(APP_SCHEMA.tables["app_users"].insert().values(scim_id="local", login="taken", enabled=True))
    _write(ctx.store, b, "Taken", new=True)
    assert deliver_now(ctx, connector, ResourceKey("default", "User", b)) == "dead"
    with ctx.store.engine.connect() as conn:
        dead = ledger.dead(conn, "appdb")
    assert [d["resource_id"] for d in dead] == [b] and "Rejected" in dead[0]["reason"]
    with ctx.store.engine.connect() as conn:
        assert ledger.pending(conn, "appdb", "default", ("User",)) == []  # dead is handled
    with ctx.store.transaction() as conn:
        released = ledger.release_dead(conn, "appdb", None)
    assert released == [ResourceKey("default", "User", b)]
    with ctx.store.engine.connect() as conn:
        assert [p.key for p in ledger.pending(conn, "appdb", "default", ("User",))] == released
        assert ledger.dead_count(conn, "appdb") == 0


def test_an_unreachable_target_backs_off_then_dead_letters_after_its_attempts(setup, tmp_path):
    ctx, connector, target = setup
    connector.options = {**connector.options, "url": "postgresql://x@127.0.0.1:1/none"}
    connector._engine = None
    id = str(uuid.uuid4())
    key = ResourceKey("default", "User", id)
    _write(ctx.store, id, "someone", new=True)
    assert deliver_now(ctx, connector, key) == "retry"
    with ctx.store.engine.connect() as conn:
        state = ledger.load_state(conn, "appdb", key)
    assert state.attempts == 1 and state.next_attempt_at is not None and "Unavailable" in state.last_error
    assert deliver_now(ctx, connector, key, force=True) == "retry"
    assert deliver_now(ctx, connector, key, force=True) == "dead"
    with ctx.store.engine.connect() as conn:
        assert "gave up after 3 attempts" in ledger.dead(conn, "appdb")[0]["reason"]


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap():
    from libs.connectors.base import RetryPolicy

    policy = RetryPolicy(base=1, cap=30)
    assert [policy.delay(n, 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert [policy.delay(n, 0.0) for n in range(1, 4)] == [0.5, 1, 2]


@pytest.mark.redis
def test_joining_a_scope_group_delivers_the_user_and_leaving_it_removes_the_user(engine, tmp_path, redis_conn):
    from rq import Queue
    from rq.serializers import JSONSerializer

    from libs.scim.schemas import GROUPS

    url = f"sqlite:///{tmp_path / 'app.db'}"
    create_app_schema(url)
    spec = tomllib.loads(sql_connector_toml("appdb", url))["connectors"]["appdb"]
    spec["scope"] = {"member_of": ["App users"]}
    connector = build_connector("appdb", spec)
    ctx = DeliveryContext(Settings(), DirectoryStore(engine), redis_conn, {"appdb": connector})
    target = app_engine(url)
    user_id, group_id = str(uuid.uuid4()), str(uuid.uuid4())
    _write(ctx.store, user_id, "ada", new=True)
    user = ResourceKey("default", "User", user_id)
    assert deliver_now(ctx, connector, user) == "skipped"  # not a member of the scope group
    assert _logins(target) == []

    def set_members(ids: list[str], new: bool) -> None:
        with ctx.store.transaction() as conn:
            if new:
                group = ctx.store.insert_resource(conn, "default", GROUPS, group_id, {"displayName": "App users"})
            else:
                group = ctx.store.load(conn, "default", GROUPS, group_id, lock=True)
                group = ctx.store.update_resource(conn, GROUPS, group, group.doc, doc_changed=False)
            ctx.store.remove_members(conn, "default", group, None)
            ctx.store.add_members(conn, "default", group, ids)
            ctx.store.record(conn, [{"app": "default", "job_id": uuid.uuid4().hex, "result": {}, "request_id": None,
                                     "change": {"resource_type": "Group", "resource_id": group_id, "op": "patch",
                                                "version": group.version}}])

    queue = Queue("scim-deliveries", connection=redis_conn, serializer=JSONSerializer)
    set_members([user_id], new=True)
    assert deliver_now(ctx, connector, ResourceKey("default", "Group", group_id)) == "delivered"
    jobs = [queue.fetch_job(i) for i in queue.job_ids]
    assert [(j.args[0]["resource_id"], j.args[0]["rescope"]) for j in jobs] == [(user_id, True)]
    assert deliver_now(ctx, connector, user, rescope=True) == "delivered"
    assert _logins(target) == ["ada"]

    queue.empty()
    set_members([], new=False)
    assert deliver_now(ctx, connector, ResourceKey("default", "Group", group_id)) == "delivered"
    assert [queue.fetch_job(i).args[0]["resource_id"] for i in queue.job_ids] == [user_id]  # held by the target
    assert deliver_now(ctx, connector, user, rescope=True) == "removed"
    assert _logins(target) == []
    target.dispose()
    connector.close()


@pytest.mark.redis
def test_a_delivery_job_that_died_past_its_retries_does_not_block_the_next_one_of_its_id(redis_conn):
    from rq import Queue
    from rq.job import JobStatus
    from rq.serializers import JSONSerializer

    from services.deliverer.fanout import enqueue

    queue = Queue(f"deliveries-{uuid.uuid4().hex[:6]}", connection=redis_conn, serializer=JSONSerializer)
    key, job_id = ResourceKey("default", "User", str(uuid.uuid4())), f"dlv-hook-sweep-{uuid.uuid4().hex}"
    enqueue(queue, "hook", key, job_id)
    enqueue(queue, "hook", key, job_id)  # still queued: the same job does the work
    assert queue.count == 1
    job = queue.dequeue_any([queue], None, connection=redis_conn, serializer=JSONSerializer)[0]
    job.set_status(JobStatus.FAILED)  # as RQ leaves a job abandoned by killed workers past its retries
    enqueue(queue, "hook", key, job_id)
    assert queue.job_ids == [job_id]
    assert queue.fetch_job(job_id).get_status() == JobStatus.QUEUED


def _hook_connector(url: str, timeout: float):
    return build_connector("hook", {"type": "webhook", "url": url, "secret": "s" * 32, "timeout": timeout,
                                    "retry": {"base": 0.01, "cap": 0.02}, "users": {}})


def _delete(store: DirectoryStore, id: str) -> None:
    with store.transaction() as conn:
        current = store.load(conn, "default", USERS, id, lock=True)
        store.delete_resource(conn, current)
        store.record(conn, [{"app": "default", "job_id": uuid.uuid4().hex, "result": {}, "request_id": None,
                             "change": {"resource_type": "User", "resource_id": id, "op": "delete",
                                        "version": current.version + 1}}])


def _attempt_timing_out(ctx, connector, key, hook) -> None:
    assert deliver_now(ctx, connector, key) == "retry"


def _attempt_killed_mid_call(ctx, connector, key, hook) -> None:
    def deliverer() -> None:
        ctx.store.engine.dispose(close=False)  # the parent's connections stay the parent's
        deliver_now(ctx, connector, key)

    child = multiprocessing.get_context("fork").Process(target=deliverer)
    child.start()
    deadline = time.monotonic() + 10
    while hook.received == 0:
        assert time.monotonic() < deadline and child.is_alive(), "the delivery never reached the hook"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()


@pytest.mark.parametrize(("timeout", "lost_answer"), [(0.3, _attempt_timing_out), (10, _attempt_killed_mid_call)],
                         ids=["timed-out", "killed"])
def test_a_deletion_reaches_a_target_that_applied_an_attempt_whose_answer_was_lost(engine, timeout, lost_answer):
    with HookReceiver("s" * 32) as hook:
        hook.delay = 1.0  # the hook applies each event, but answers after the sender stopped waiting
        connector = _hook_connector(hook.url, timeout)
        ctx = DeliveryContext(Settings(), DirectoryStore(engine), None, {"hook": connector})
        id = str(uuid.uuid4())
        key = ResourceKey("default", "User", id)
        _write(ctx.store, id, "ada", new=True)
        lost_answer(ctx, connector, key, hook)
        deadline = time.monotonic() + 5
        while ("User", id) not in hook.state():
            assert time.monotonic() < deadline, "the hook never applied the first attempt"
            time.sleep(0.05)
        hook.delay = 0.0
        _delete(ctx.store, id)
        assert deliver_now(ctx, connector, key, force=True) == "removed"
        assert hook.state() == {}
        connector.close()


class _DeletedWhileDelivering(DirectoryStore):
    """The store as a delivery sees it when the resource's deletion commits between the
    delivery's read of the newest change and its read of the resource (once)."""

    def __init__(self, engine, resource_id: str) -> None:
        super().__init__(engine)
        self.resource_id = resource_id

    def get(self, app, schema, id, **kw):
        if id == self.resource_id:
            self.resource_id = None
            _delete(self, id)
        return super().get(app, schema, id, **kw)


def test_a_deletion_committing_mid_delivery_still_beats_an_earlier_attempt_the_target_applies_late(engine):
    """The soak's lost deletion (issue 18): an upsert whose answer was lost is applied by the
    target late, after the deletion event; the deletion must carry the deletion's own seq,
    or the late upsert (same seq) wins at the target and the user stays there for good."""
    with HookReceiver("s" * 32) as hook:
        hook.delay = 1.0  # the first attempt is applied, but after its sender stopped waiting
        connector = _hook_connector(hook.url, 0.3)
        id = str(uuid.uuid4())
        key = ResourceKey("default", "User", id)
        ctx = DeliveryContext(Settings(), DirectoryStore(engine), None, {"hook": connector})
        _write(ctx.store, id, "ada", new=True)
        assert deliver_now(ctx, connector, key) == "retry"  # upsert in flight, applied in ~1 s
        hook.delay = 0.0
        racing = DeliveryContext(Settings(), _DeletedWhileDelivering(engine, id), None, {"hook": connector})
        assert deliver_now(racing, connector, key, force=True) == "removed"
        deliver_now(ctx, connector, key, force=True)  # the deletion's own delivery
        deadline = time.monotonic() + 5
        while len(hook.events) < 2 or hook.events[-1]["type"] != "upserted":
            assert time.monotonic() < deadline, hook.events  # the late upsert lands last
            time.sleep(0.05)
        with ctx.store.engine.connect() as conn:
            assert ledger.latest_change(conn, key)[0] == max(e["seq"] for e in hook.events if e["type"] == "deleted")
        assert hook.state() == {}, "the deleted user stayed at the target"
        connector.close()


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    with slapd_server(tmp_path_factory.mktemp("slapd")) as server:
        yield server


def _ldap_connector(url: str):
    spec = tomllib.loads(ldap_connector_toml("corp", url))["connectors"]["corp"]
    spec.update(timeout=1, retry={"base": 0.01, "cap": 0.02})
    return build_connector("corp", spec)


def _people(slapd, id: str) -> list[str]:
    conn = slapd.connection()
    conn.search(f"ou=people,{SUFFIX}", f"(employeeNumber={id})", attributes=["uid"])
    found = [e.entry_dn for e in conn.entries]
    conn.unbind()
    return found


def test_a_deletion_removes_an_entry_renamed_by_an_attempt_whose_answer_was_lost(engine, slapd):
    with LossyRelay(slapd.port) as relay:
        connector = _ldap_connector(f"ldap://127.0.0.1:{relay.port}")
        ctx = DeliveryContext(Settings(), DirectoryStore(engine), None, {"corp": connector})
        id = str(uuid.uuid4())
        key = ResourceKey("default", "User", id)
        _write(ctx.store, id, "ada", new=True)
        assert deliver_now(ctx, connector, key) == "delivered"
        _write(ctx.store, id, "ada.l", new=False)
        relay.lose_after = is_rename  # the rename reaches slapd and is done; its answer never comes back
        assert deliver_now(ctx, connector, key) == "retry"
        relay.lose_after, relay.lose_answers = None, False
        assert _people(slapd, id) == [f"uid=ada.l,ou=people,{SUFFIX}"]
        with engine.connect() as conn:
            assert ledger.load_state(conn, "corp", key).remote_id == f"uid=ada,ou=people,{SUFFIX}"
        _delete(ctx.store, id)
        assert deliver_now(ctx, connector, key, force=True) == "removed"
        assert _people(slapd, id) == []
        connector.close()


def test_the_sweeper_still_sees_a_change_that_committed_after_a_later_one(setup):
    ctx, connector, target = setup
    if ctx.store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite commits one write at a time: seqs become visible in order")
    slow, quick = str(uuid.uuid4()), str(uuid.uuid4())
    with ctx.store.engine.connect() as conn, conn.begin():  # a write that took its seq, not yet committed
        ctx.store.insert_resource(conn, "default", USERS, slow, {"userName": "slow", "name": {"givenName": "S"}})
        ctx.store.record(conn, [{"app": "default", "job_id": uuid.uuid4().hex, "result": {}, "request_id": None,
                                 "change": {"resource_type": "User", "resource_id": slow, "op": "create",
                                            "version": 1}}])
        _write(ctx.store, quick, "quick", new=True)  # a later seq, committed first and delivered
        assert deliver_now(ctx, connector, ResourceKey("default", "User", quick)) == "delivered"
        with ctx.store.transaction() as sweep:
            ledger.advance_cursor(sweep, "appdb", "default", ("User",))
    # Its own delivery may fail (the target went down): only the sweeper would bring it back.
    with ctx.store.engine.connect() as conn:
        assert [p.key.resource_id for p in ledger.pending(conn, "appdb", "default", ("User",))] == [slow]


def test_resync_brings_a_directory_five_times_the_servers_size_limit_and_finds_no_drift_after(engine, slapd):
    """500 users and a 500-member group against a service account that may read 100 entries a
    search: resync reads the target page by page, creates everything, and a dry run after it
    finds nothing to do (issue 18 item 6)."""
    from libs.scim.schemas import GROUPS
    from services.deliverer.resync import resync
    from tests.support.ldap import SIZE_LIMIT

    suffix = uuid.uuid4().hex[:6]
    people, groups = f"people{suffix}", f"groups{suffix}"
    admin = slapd.connection()
    for ou in (people, groups):
        assert admin.add(f"ou={ou},{SUFFIX}", ["organizationalUnit"], {"ou": ou})
    admin.unbind()
    spec = tomllib.loads(ldap_connector_toml("scale", slapd.url, people=people, groups=groups))["connectors"]["scale"]
    connector = build_connector("scale", spec)
    store = DirectoryStore(engine)
    ids = [str(uuid.uuid4()) for _ in range(5 * SIZE_LIMIT)]
    with store.transaction() as conn:
        for n, id in enumerate(ids):
            store.insert_resource(conn, "default", USERS, id, {"userName": f"scale.{suffix}.{n}",
                                                              "name": {"givenName": "S", "familyName": "C"}})
        group = store.insert_resource(conn, "default", GROUPS, str(uuid.uuid4()), {"displayName": f"all-{suffix}"})
        store.add_members(conn, "default", group, ids)
    ctx = DeliveryContext(Settings(), store, None, {"scale": connector})
    report = resync(ctx, connector, dry_run=False)
    assert (report.count("create"), report.count("remove"), report.count("foreign")) == (len(ids) + 1, 0, 0)
    assert resync(ctx, connector, dry_run=True).drift == []
    assert len(connector.read("Group")[f"cn=all-{suffix},ou={groups},{SUFFIX}".lower()]["member"]) == len(ids)
    connector.close()


def test_a_user_whose_dn_an_entry_not_ours_holds_is_dead_lettered_with_the_reason(engine, slapd):
    admin = slapd.connection()
    squatted = f"uid=squat-{uuid.uuid4().hex[:6]}"
    assert admin.add(f"{squatted},ou=people,{SUFFIX}", ["inetOrgPerson"], {"cn": "Theirs", "sn": "T"})
    admin.unbind()
    connector = _ldap_connector(slapd.url)
    ctx = DeliveryContext(Settings(), DirectoryStore(engine), None, {"corp": connector})
    id = str(uuid.uuid4())
    _write(ctx.store, id, squatted.removeprefix("uid="), new=True)
    assert deliver_now(ctx, connector, ResourceKey("default", "User", id)) == "dead"
    with engine.connect() as conn:
        reason = ledger.dead(conn, "corp")[0]["reason"]
    assert reason.startswith("Conflict: LDAP entry") and "is not ours: its employeeNumber is empty" in reason
    assert _people(slapd, id) == []
    connector.close()
