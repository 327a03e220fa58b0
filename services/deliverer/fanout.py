"""Deliver committed changes to the downstream connectors: fan out and deliver.

- ``enqueue_after_commit`` (called by ``jobs.apply_writes`` once a batch committed) puts one
  delivery job per interested connector on the delivery queue, a queue of its own served
  by the ``scimbus deliverer`` processes: a slow or dead target never delays a SCIM answer
  or another connector's queue position for long, and the write path never waits on it.
- ``deliver`` is that job. It takes a Redis lock per (connector, resource), reads the
  resource *as it is now* and the newest change ``seq``, and hands the state (or the
  deletion) to the connector; the ledger records the seq and version delivered. A job
  that finds its change already handled does nothing, so replays, duplicates and
  out-of-order runs cannot move a target backwards.
- Retryable failures set a backoff (exponential, jittered) in the ledger; the sweeper
  (``services.sweeper.sweep``) re-enqueues what is due and anything committed but never
  enqueued (a crash between commit and enqueue). Permanent failures, and retryable ones
  past the connector's attempts, become dead letters with the reason.
"""

from __future__ import annotations

import functools
import logging
import os
import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from redis import Redis
from redis.exceptions import LockError, RedisError
from rq import Queue, Retry
from rq.job import JobStatus
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from libs.bus import defaults
from libs.bus.connection import connect
from libs.config import Settings, load_settings
from libs.connectors.base import Connector, Previous
from libs.connectors.errors import Permanent, Retryable
from libs.connectors.registry import build_connectors
from libs.connectors.mapping import ENTERPRISE
from libs.metrics.deliveries import observe_delivery
from libs.scim.filter import parse_filter
from libs.scim.schemas import RESOURCE_TYPES
from libs.store import deliveries as ledger
from libs.store.deliveries import ResourceKey
from libs.store.directory import DirectoryStore
from libs.store.access import open_store
from libs.store.delivery_ledger import DeliveryLedger

log = logging.getLogger("scimbus.deliveries")

DELIVER_FUNCTION = defaults.DELIVER_FUNCTION
LOCK_GRACE = 10
"""Seconds a resource's delivery lock outlives the job timeout (``Settings.delivery_timeout``)."""
LOCK_WAIT = 5
"""Seconds a delivery waits for another delivery of the same resource before leaving it to the sweeper."""


@dataclass
class DeliveryContext:
    settings: Settings
    store: DirectoryStore
    redis: Redis
    connectors: dict[str, Connector] = field(default_factory=dict)

    @functools.cached_property
    def ledger(self) -> DeliveryLedger:
        return DeliveryLedger(self.store)

    @property
    def queue(self) -> Queue:
        return Queue(self.settings.delivery_queue, connection=self.redis, serializer=JSONSerializer)


_context: DeliveryContext | None = None
_pid: int | None = None
_interest: dict[str, tuple[str, frozenset[str]]] | None = None


def get_context() -> DeliveryContext:
    global _context, _pid
    if _context is None or _pid != os.getpid():
        settings = load_settings()
        _context = DeliveryContext(settings, open_store(settings, pool_size=2),
                                   connect(settings.redis_url), build_connectors(settings))
        _pid = os.getpid()
    return _context


def _interested(settings: Settings) -> dict[str, tuple[str, frozenset[str]]]:
    """connector → (app, resource types), read from the config without building clients."""
    global _interest
    if _interest is None:
        out = {}
        for name, spec in (settings.file.get("connectors") or {}).items():
            if spec.get("enabled", True):
                kinds = frozenset(k for k, s in (("User", "users"), ("Group", "groups")) if s in spec)
                out[name] = (spec.get("app", settings.default_app), kinds)
        _interest = out
    return _interest


def enqueue(queue: Queue, connector: str, key: ResourceKey, job_id: str, *, timeout: int = 60,
            rescope: bool = False) -> None:
    """Queue one delivery under ``job_id``, unless a job of that id is still queued, running
    or waiting for a retry (it will do the same work)."""
    for _ in range(2):
        try:
            queue.enqueue(DELIVER_FUNCTION, {"connector": connector, "app": key.app, "rescope": rescope,
                                             "resource_type": key.resource_type, "resource_id": key.resource_id},
                          job_id=job_id, unique=True, result_ttl=0, failure_ttl=3600, ttl=24 * 3600,
                          job_timeout=timeout, retry=Retry(max=3, interval=[1, 5, 15]),
                          description=f"deliver {key.resource_type} {key.resource_id} to {connector}")
            return
        except DuplicateJobError:
            if not _clear_if_ended(queue, job_id):
                return


_ENDED = frozenset({JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.FINISHED})


def _clear_if_ended(queue: Queue, job_id: str) -> bool:
    """Remove a job of this id that ended without a success still on record: a delivery whose
    deliverers were killed past its retries sits in the failed registry for an hour, and
    its id — the sweeper's id for the same pending change — must not block the change that long."""
    job = queue.fetch_job(job_id)
    if job is None:
        return True
    if job.get_status(refresh=False) not in _ENDED:
        return False
    job.delete()
    return True


def enqueue_after_commit(settings: Settings, redis: Redis, app: str, resource_type: str, resource_id: str,
                         job_id: str) -> None:
    """One delivery job per connector interested in this change; a failure is the sweeper's."""
    targets = [name for name, (c_app, kinds) in _interested(settings).items()
               if c_app == app and resource_type in kinds]
    if not targets:
        return
    queue = Queue(settings.delivery_queue, connection=redis, serializer=JSONSerializer)
    key = ResourceKey(app, resource_type, resource_id)
    try:
        for name in targets:
            enqueue(queue, name, key, f"dlv-{name}-{job_id}", timeout=settings.delivery_timeout)
    except RedisError as exc:
        log.warning("could not enqueue deliveries of %s %s (the sweeper will): %s", resource_type, resource_id, exc)


# ---------------------------------------------------------------------------------- deliver
def deliver(payload: dict[str, Any]) -> str:
    ctx = get_context()
    name = payload["connector"]
    connector = ctx.connectors.get(name)
    if connector is None:
        log.warning("delivery for unknown connector %r dropped (not in the config any more)", name)
        return "unknown-connector"
    key = ResourceKey(payload["app"], payload["resource_type"], payload["resource_id"])
    lock = ctx.redis.lock(f"scimbus:delivery:{name}:{key.app}:{key.resource_type}:{key.resource_id}",
                          timeout=ctx.settings.delivery_timeout + LOCK_GRACE,
                          blocking_timeout=LOCK_WAIT)
    if not lock.acquire():
        return "busy"  # the holder reads the newest state anyway; the sweeper re-checks
    try:
        outcome = deliver_now(ctx, connector, key, rescope=bool(payload.get("rescope")))
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("delivery lock of %s expired before release", key)
    observe_delivery(name, outcome)
    return outcome


class _Lookup:
    """Current documents of referenced resources (members, managers), cached per delivery."""

    def __init__(self, store: DirectoryStore, app: str) -> None:
        self.store, self.app, self.cache = store, app, {}

    def __call__(self, resource_type: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        out = {}
        for id in ids:
            if (resource_type, id) not in self.cache:
                self.cache[(resource_type, id)] = self.store.get(self.app, RESOURCE_TYPES[resource_type], id)
            if self.cache[(resource_type, id)] is not None:
                out[id] = self.cache[(resource_type, id)]
        return out


def deliver_now(ctx: DeliveryContext, connector: Connector, key: ResourceKey, *, force: bool = False,
                rescope: bool = False) -> str:
    """Bring one resource of one connector's target to the directory's state (caller holds the lock).

    ``rescope``: the resource did not change but its scope may have (it joined or left a
    scope group), so it is delivered again even when its newest change is handled.
    """
    latest, state = ctx.ledger.newest_change_and_state(connector.name, key)
    if latest is None:
        return "skipped"
    seq, version = latest
    if state.handled(seq) and not rescope:
        return "skipped"
    now = ledger.utcnow()
    if not force and state.attempts and not ledger.due(state.next_attempt_at, now):
        return "skipped"  # backing off; the sweeper brings it back when due
    seq, version, doc = _current(ctx, key, seq, version)
    outcome = "delivered"
    try:
        if doc is None or not connector.scope.includes(key.resource_type, doc):
            if state.present:
                connector.remove(key.resource_type, key.resource_id, Previous(state.remote_id, True, seq))
                outcome = "removed"
            else:
                outcome = "skipped"
            state.present = False
        else:
            lookup = _Lookup(ctx.store, key.app)
            fields = connector.render(key.resource_type, doc, lookup)
            previous = Previous(state.remote_id, state.present, seq)
            if not state.present:
                _may_hold(ctx, connector, key, state, connector.remote_id_before_apply(key.resource_type, doc,
                                                                                       fields))
            remote = connector.apply(key.resource_type, doc, fields, previous, lookup)
            state.present = True
            state.remote_id = remote or connector.key(key.resource_type, doc, fields)
            _follow_ups(ctx, connector, key, doc, rescope)
        state.delivered_seq, state.delivered_version = seq, version
        state.attempts, state.last_error, state.next_attempt_at = 0, None, None
    except Permanent as exc:
        outcome = _dead(ctx, connector, key, state, seq, version, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # Retryable, and anything unexpected: a fix or a restart may deliver it
        if not isinstance(exc, Retryable):
            log.exception("connector %s failed unexpectedly on %s", connector.name, key)
        reason = f"{type(exc).__name__}: {exc}"
        state.attempts += 1
        if state.attempts >= connector.retry.max_attempts:
            outcome = _dead(ctx, connector, key, state, seq, version,
                            f"gave up after {state.attempts} attempts; last error {reason}")
        else:
            delay = connector.retry.delay(state.attempts, random.random())
            state.last_error, state.next_attempt_at = reason, now + timedelta(seconds=delay)
            outcome = "retry"
            log.info("delivery of %s to %s failed (attempt %d), retry in %.1fs: %s", key, connector.name,
                     state.attempts, delay, reason)
    handled = outcome in ("delivered", "removed", "skipped")  # skipped here: out of scope, handled
    ctx.ledger.save(connector.name, key, state, delivered=(seq, outcome) if handled else None)
    return outcome


def _current(ctx: DeliveryContext, key: ResourceKey, seq: int, version: int) -> tuple[int, int, Any]:
    """The resource as it is now and the seq of the change that made it so.

    The newest seq was read before the resource: a change committing in between (a
    deletion) would be sent stamped with the seq of the change before it, the one an
    earlier attempt may have carried too. A target keeps the highest seq, so with equal
    seqs the later arrival wins: an earlier upsert whose answer was lost, applied by the
    target after the deletion, brought the user back, and the deletion's own delivery then
    found the ledger saying "not held" and sent nothing (the soak's lost deletion, issue
    18). So the seq is read again after the resource until the two agree."""
    while True:
        doc = ctx.store.get(key.app, RESOURCE_TYPES[key.resource_type], key.resource_id)
        latest = ctx.ledger.newest_change(key)
        if latest is None or latest[0] == seq:
            return seq, version, doc
        seq, version = latest


def _may_hold(ctx: DeliveryContext, connector: Connector, key: ResourceKey, state: ledger.State,
              remote_id: str | None) -> None:
    """Record, before a first attempt goes out, that the target may hold the resource from now on.

    An attempt whose answer never comes back (a timeout, a deliverer killed mid-call) may
    still have been applied. Recorded only on a confirmed success, a later deletion would be
    skipped as "never delivered" and the resource stay at the target for good; recorded
    first, the deletion is sent (removing what is not there succeeds).
    """
    state.present, state.remote_id = True, remote_id
    ctx.ledger.save(connector.name, key, state)


def _follow_ups(ctx: DeliveryContext, connector: Connector, key: ResourceKey, doc: dict[str, Any],
                rescope: bool) -> None:
    """Deliveries a delivered resource makes due for others (never from a re-delivery: no cascades,
    no ping-pong between two users who manage each other)."""
    if rescope:
        return
    try:
        if key.resource_type == "Group" and connector.scope.groups:
            _rescope_members(ctx, connector, key, doc)
        if key.resource_type == "User" and connector.uses_refs():
            _rescope_reports(ctx, connector, key)
    except RedisError as exc:
        log.warning("could not enqueue follow-up deliveries of %s: %s (resync repairs them)", key, exc)


def _rescope_members(ctx: DeliveryContext, connector: Connector, key: ResourceKey, doc: dict[str, Any]) -> None:
    """A scope group changed: its members, and every user the target holds, may have entered or
    left the scope, which no change of theirs records."""
    if ctx.redis is None or str(doc.get("displayName", "")).lower() not in connector.scope.groups:
        return
    held = [i for i, s in ctx.ledger.states(connector.name, key.app, "User").items() if s.present]
    ids = dict.fromkeys([m["value"] for m in doc.get("members") or [] if m.get("type", "User") == "User"] + held)
    stamp = os.urandom(4).hex()
    for user_id in ids:
        enqueue(ctx.queue, connector.name, ResourceKey(key.app, "User", user_id),
                f"dlv-{connector.name}-rescope-{user_id}-{stamp}", timeout=ctx.settings.delivery_timeout,
                rescope=True)


def _rescope_reports(ctx: DeliveryContext, connector: Connector, key: ResourceKey) -> None:
    """A user's direct reports render its attributes (``ref`` = its userName, its DN): deliver
    them again, since a rename of their manager records no change of theirs."""
    if ctx.redis is None:
        return
    node = parse_filter(f'{ENTERPRISE}:manager.value eq "{key.resource_id}"')
    start, stamp = 1, os.urandom(4).hex()
    while True:
        total, docs = ctx.store.search(key.app, RESOURCE_TYPES["User"], node, start_index=start, count=500,
                                       with_groups=False)
        for doc in docs:
            enqueue(ctx.queue, connector.name, ResourceKey(key.app, "User", doc["id"]),
                    f"dlv-{connector.name}-report-{doc['id']}-{stamp}", timeout=ctx.settings.delivery_timeout,
                    rescope=True)
        start += 500
        if start > total:
            return


def _dead(ctx: DeliveryContext, connector: Connector, key: ResourceKey, state: ledger.State, seq: int,
          version: int, reason: str) -> str:
    log.warning("dead letter for %s on %s: %s", key, connector.name, reason)
    ctx.ledger.add_dead_letter(connector.name, key, seq, version, reason, state.attempts or 1)
    state.dead_seq, state.attempts, state.last_error, state.next_attempt_at = seq, 0, reason, None
    return "dead"


def status(ctx: DeliveryContext) -> dict[str, tuple[float, int]]:
    """{connector: (delivery lag seconds, dead letters)} for the metrics collector."""
    return ctx.ledger.lag_and_dead({name: (connector.options["app"], tuple(connector.mappings))
                                    for name, connector in ctx.connectors.items()}, ledger.utcnow())


def after_writes(jobs: list) -> None:
    """Called by ``jobs.apply_writes`` after a batch committed (also on a replay: harmless)."""
    for job in jobs:
        after_write(job)


def after_write(job) -> None:
    """Delivery jobs for one committed write."""
    from rq import get_current_job

    from services.worker.context import get_context as worker_context

    current = get_current_job()
    if current is None:  # applied outside a worker (tests, tools): the sweeper delivers it
        return
    enqueue_after_commit(worker_context().settings, current.connection, job.app, job.resource_type,
                         job.resource_id, job.job_id)
