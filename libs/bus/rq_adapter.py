"""RQ's internals, all in one place: the RQ version scimbus is written for is the one this
module was written against (``WRITTEN_FOR``; tests/services/runtime/test_library_contracts.py
fails loudly when an upgrade changes what it relies on).

scimbus drives RQ past its public API in four places, each a section below:

- **the enqueue** (``UNIQUE_ENQUEUE_SCRIPT``, ``JobHash``, ``result_outcome``): the front
  puts a write batch on the queue with RQ's own Lua script, writing the job's hash as RQ
  would without building a ``Job``, and reads RQ's result stream without building
  ``Result`` objects (``libs.bus.queues``);
- **the allow-list** (``AllowedJob``, ``refusal``): workers run scimbus's own job functions
  and nothing else;
- **the scheduler** (``PoolScheduler``): RQ's scheduler, run by a pool's parent;
- **the worker pool** (``ScimWorker``, ``_Pool``, ``start_pool``): non-forking workers,
  respawned when one dies, with RQ's bookkeeping trimmed.
"""

from __future__ import annotations

import gc
import logging
import time
import zlib
from base64 import b64decode
from uuid import uuid4
from typing import Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import Queue, SimpleWorker
from rq.exceptions import DeserializationError
from rq.executions import WORKER_EXECUTIONS_KEY_TEMPLATE, Execution, ExecutionRegistry
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.scripts import UNIQUE_ENQUEUE_SCRIPT
from rq.utils import as_text, current_timestamp, import_attribute, now, parse_composite_key, utcformat
from rq.worker import WorkerStatus
from rq.worker_pool import WorkerPool
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from libs.bus import deadlines, defaults, failures
from libs.bus.connection import connect
from libs.bus.serializer import OrjsonSerializer
from libs.config import Settings
from libs.metrics.metrics import JOB_FAILURES

WRITTEN_FOR = {"rq": "3.0"}
"""The library minor versions whose internals this module drives."""


# ============================================================ the enqueue
ENQUEUE_SCRIPT = UNIQUE_ENQUEUE_SCRIPT
"""RQ's own atomic unique enqueue (check the id is new, save the job hash, set its TTL,
push its id); ``libs.bus.queues`` prefixes lines of its own."""


class JobHash:
    """The fields of a job's Redis hash, as ``Queue.create_job`` then ``Queue.enqueue`` save
    them, for jobs that differ only in their arguments and description.

    RQ builds a ``Job`` per enqueue: a uuid, its serializer checked against a ``Protocol``
    (~7 µs), five timestamps, twenty fields formatted. Every batch the front sends runs the
    same function with the same options, so those fields are made once, from a job RQ
    builds itself, and each batch fills in only what is its own: its data (RQ's encoding:
    the serialized call, zlib-compressed), description and timestamps. In the stack that
    took the front's enqueue from ~159 to ~85 µs of CPU a batch of six (its thread's CPU clock).
    ``tests/libs/bus/test_queues.py`` holds it to the hash RQ's own enqueue writes, so an RQ
    release that changes the hash fails there, not in a worker."""

    VARYING = ("created_at", "enqueued_at", "data", "description")

    COMPRESSION = 1
    """zlib's fastest level, where RQ uses its default (6): a batch of six creates (4.3 KB of
    JSON) compresses to 901 bytes in 12 µs instead of 869 in 18; RQ decompresses either."""

    def __init__(self, queue: Queue, function: str, **options: Any) -> None:
        job = queue.create_job(function, args=(), job_id="template", description="", **options)
        self.function = function
        self.dumps = job.serializer.dumps
        self.fixed: list = []
        for key, value in job.to_dict().items():
            if value is not None and key not in self.VARYING:
                self.fixed += (key, value if isinstance(value, (bytes, str)) else str(value))

    def fields(self, args: tuple, description: str) -> list:
        """The hash (key, value, key, value …) of a job calling the function with ``args``,
        created and enqueued now, for the enqueue script."""
        stamp = utcformat(now())
        data = zlib.compress(self.dumps((self.function, None, args, {})), self.COMPRESSION)
        return [*self.fixed, "created_at", stamp, "enqueued_at", stamp, "data", data, "description", description]


def result_key(job_id: str) -> str:
    """The Redis stream RQ appends a job's results to."""
    return Result.get_key(job_id)


SUCCESSFUL, RETRIED, FAILED = "successful", "retried", "failed"


def result_outcome(payload: dict[bytes, bytes]) -> tuple[str, Any]:
    """(kind, return value) of an entry of RQ's result stream: the fields ``Result.restore``
    reads, without the Result object (its serializer check and timestamps cost ~40 µs a
    batch). The return value is decoded for a successful job only."""
    kind = Result.Type(int(payload[b"type"]))
    if kind == Result.Type.SUCCESSFUL:
        return SUCCESSFUL, OrjsonSerializer.loads(b64decode(payload[b"return_value"]))
    if kind == Result.Type.RETRIED:
        return RETRIED, None
    return FAILED, None


# ============================================================ the allow-list
# Workers run scimbus's own job functions and nothing else.
#
# RQ stores a job's function as a dotted path in the job's Redis hash and imports it when a
# worker takes the job: anyone who can write to Redis could plant a job naming
# ``os.system`` and an argument and have a worker run it. RQ's job hash names other code to
# import too (success, failure and stopped callbacks) and, since RQ 3, web hooks the worker
# calls with the job's data. A scimbus job names one of ``defaults.JOB_FUNCTIONS`` and none
# of the rest, so:
#
# - ``refusal`` says what is wrong with a job, reading only its hash (no import);
# - ``AllowedJob`` is the job class of every worker, pool and registry clean-up: its function
#   is imported only when allowed, it has no callbacks whatever its hash says (a clean-up of
#   an abandoned job calls the failure callback), and it sends no web hook;
# - the worker refuses a job ``refusal`` objects to before anything of it runs
#   (``ScimWorker``, below), logs an error naming it, and deletes it.

MOVED: dict[str, str] = {"services.worker.fanout.deliver": defaults.DELIVER_FUNCTION}
"""Old dotted path → new, for job functions moved since a release (issue 20's layout): a
delivery enqueued by a writer of the previous release, still in Redis during an upgrade,
runs the moved function instead of being refused."""


def current_name(name: object) -> object:
    """The dotted path a job's function has now (``MOVED``), else ``name`` unchanged."""
    return MOVED.get(name, name) if isinstance(name, str) else name


class RefusedJob(Exception):
    """A job names code that is not one of scimbus's job functions."""


def refusal(job: Job, functions: frozenset[str]) -> str | None:
    """Why ``job`` must not run (None: it may), from its hash alone."""
    try:
        name, instance = current_name(job.func_name), job.instance
    except DeserializationError:
        return "its data cannot be read"
    if not isinstance(name, str) or name not in functions:
        return f"it names {str(name)[:200]!r}, which is not a scimbus job function"
    if instance is not None:
        return "it names a method of an object"
    callbacks = [kind for kind in ("success", "failure", "stopped") if getattr(job, f"_{kind}_callback_name", None)]
    if callbacks:
        return f"it names {'/'.join(callbacks)} callbacks"
    if job.webhooks:
        return "it names web hooks"
    return None


class AllowedJob(Job):
    functions: frozenset[str] = defaults.JOB_FUNCTIONS
    """The dotted paths this process runs (the tests' pools add their own job functions)."""

    claimed: frozenset[str] = frozenset({defaults.JOB_FUNCTION})
    """The dotted paths whose jobs the worker claims as it starts them (``libs.bus.deadlines``):
    a write batch's."""

    start_claim: str | None = None
    """The claim the worker made on this run of the job as it started it (``deadlines.CLAIMED``,
    ``EXPIRED`` …; ``ScimWorker.prepare_execution``); None: none was made."""

    @property
    def func(self):
        reason = refusal(self, self.functions)
        if reason is not None:
            raise RefusedJob(f"job {self.id} refused: {reason}")
        return import_attribute(current_name(self.func_name))

    # Scimbus sets no callback: one a hash names is never imported.
    success_callback = failure_callback = stopped_callback = property(lambda self: None)

    def send_webhooks(self, status, *, exc_string: str | None = None) -> None:
        """Scimbus sets no web hook: one a hash names is never called."""


# ============================================================ the scheduler
# RQ's scheduler, run by a pool's parent between its checks on its workers.
#
# A job that failed (its worker was killed, the database blinked) is retried after an
# interval: RQ parks it in the queue's scheduled registry, and a scheduler moves it back to
# the queue when it is due. RQ's workers fork that scheduler from one of them: a third
# Python process per pool, ~20 MB of PSS for a loop that wakes once a second. The pool's
# parent already wakes once a second to check on its workers; ``tick`` is called there, in
# its main thread, so no thread of the parent can hold a lock (its Redis connection's,
# stderr's while it logs) at the moment a worker is forked.
#
# One scheduler per queue runs at a time, across every pool of every host: the one holding
# RQ's lock (renewed on each tick, lapsing 61 s after its holder died). A pool without the
# lock tries to take it every ``MAINTENANCE_INTERVAL`` seconds, as an RQ worker does for its
# forked scheduler; a pool that stops releases it, so another pool takes over at once.

scheduler_log = logging.getLogger("scimbus.scheduler")


_TIMEOUT = 5
"""Seconds a Redis command of the scheduler may take."""


class PoolScheduler:
    def __init__(self, queue: str, redis_url: str, serializer) -> None:
        self.queue = queue
        # Timeouts: a hung Redis may slow the pool's loop, never stall it for good.
        redis = connect(redis_url, socket_timeout=_TIMEOUT, socket_connect_timeout=_TIMEOUT)
        self.rq = RQScheduler([queue], connection=redis, serializer=serializer)
        self._tried_at = float("-inf")
        self._failing = False

    @property
    def holds_lock(self) -> bool:
        return self.queue in self.rq.acquired_locks

    def tick(self) -> None:
        """Renew the lock (or try to take it) and re-queue the retries now due; never raises."""
        try:
            self._tick()
        except RedisError as exc:  # Redis restarting: the next tick tries again
            if not self._failing:
                scheduler_log.warning("scheduler of %s: %s (retrying every tick)", self.queue, exc)
            self._failing = True
            return
        except Exception:  # a bug must not stop the pool from respawning its workers
            scheduler_log.exception("scheduler of %s: unexpected failure", self.queue)
            return
        if self._failing:
            scheduler_log.info("scheduler of %s: Redis answers again", self.queue)
            self._failing = False

    def stop(self) -> None:
        try:
            self.rq.release_locks()
            self.rq.register_death()
        except RedisError as exc:
            scheduler_log.warning("scheduler of %s: could not release its lock (it lapses within a minute): %s",
                                  self.queue, exc)

    def _tick(self) -> None:
        if not self.holds_lock:
            if time.monotonic() - self._tried_at < defaults.MAINTENANCE_INTERVAL:
                return
            self._tried_at = time.monotonic()
            if not self.rq.acquire_locks():
                return
            self.rq.register_birth()
        self.rq.heartbeat()  # renews the lock; drops it from acquired_locks if another took it
        if self.holds_lock:
            self.rq.enqueue_scheduled_jobs()


# ============================================================ the worker pool
# The worker process: a pool of non-forking RQ workers, respawned when one dies.
#
# - ``ScimWorker`` is RQ's ``SimpleWorker`` (no fork per job: ~4× the throughput of the
#   forking worker) with short heartbeats and frequent maintenance, so a job whose worker
#   died with its whole host is found abandoned within seconds of its timeout.
# - ``start_pool`` runs N of them under RQ's ``WorkerPool``, which forks each worker once and
#   starts a new one when a worker dies; a dead worker never takes the stack down, and the
#   job it held runs again about a second after (``_Pool.bury``). The pool's
#   parent serves ``/metrics`` for all of its workers, and ``/healthz`` and ``/readyz`` for
#   probes (``services.runtime.pool_probes``), and runs RQ's scheduler (``PoolScheduler``, above).
# - Memory: the parent imports the job code once and freezes its objects before each fork
#   (``gc.freeze``), so a worker's garbage collections never write to the pages it shares
#   with the parent: a write to a shared page gives the worker a private copy of it.
# - The job's round trips: RQ 3.0's SimpleWorker spends nine round trips (43 replies parsed)
#   of bookkeeping on each job, more than the job's own work on a batch of one write. Here
#   it spends three while the queue has a backlog, four otherwise, a write batch's deadline
#   claim included (``libs.bus.deadlines``; a round trip of its own until it rode in the
#   start), and a delivery (deleted once done) as many where RQ spends fifteen (measured by
#   ``python -m bench.profile_writes --role rq``; tests/libs/bus/test_worker_bookkeeping.py,
#   tests/services/worker/test_claim_at_start.py): the job taken and read in one script
#   (``dequeue_job_and_maintain_ttl``), claimed and started in a second (``prepare_execution``),
#   finished in a third (``handle_job_success``), each with what the rest of scimbus reads of
#   it kept: the result stream, the started registry and the worker's execution index that
#   find a killed worker's job, retries, the failed registry. What is dropped (the finished
#   registry, worker statistics, dependents, the job's last heartbeat) is said where, with
#   why nothing needs it; tests/services/runtime/test_library_contracts.py checks RQ still
#   calls what is trimmed where 3.0 does, and still writes what the scripts write.
# - Scripts, not transactions: as atomic, but redis-py packs one command and parses one
#   reply for each, where a MULTI of N commands costs N packs (with a per-command check of
#   its own) and N + 2 reply parses. A job's start and success were 16 and 9 commands in
#   MULTIs: the worker now parses ~3 replies a job instead of ~30, for 350 µs less CPU a
#   job (1,943 → 1,593 µs a job of one write, interleaved A/B, medians). Sent with EVAL,
#   never EVALSHA: Redis caches them by digest, and a restarted Redis never answers NOSCRIPT.
# - Three more of RQ's habits are trimmed, with what they guard kept: the worker heartbeat
#   (HSET + 2 EXPIRE, sent twice per job) goes out at most once a second outside pipelines,
#   far inside its 20 s TTL; a state already recorded is not written again; and the
#   ``rq suspend`` flag is read at most once a second.
# - Only scimbus's own job functions run (the allow-list, above): a job planted in
#   Redis naming any other code is refused, logged and deleted before anything of it runs.
# - On SIGTERM the pool asks each worker for a warm shutdown: the job in hand is finished,
#   its result published, and only then does the worker exit.

log = logging.getLogger("scimbus.worker")


def _count_failure(job, exc_type, exc_value, tb) -> bool:
    JOB_FAILURES.labels(getattr(exc_type, "__name__", "unknown")).inc()
    log.error("job %s raised %s: %s", getattr(job, "id", "?"), getattr(exc_type, "__name__", exc_type), exc_value)
    if not job.should_retry:  # RQ saves it as failed next: with no password in it
        try:
            failures.redact_job(job)
        except Exception:  # unreadable data: RQ keeps it as it is
            log.warning("could not redact failed job %s", getattr(job, "id", "?"))
    return True  # let RQ's default handling (retry, then failed registry) continue


def _allowed(job_class) -> type[AllowedJob]:
    """The job class to load jobs with: ``AllowedJob`` unless a subclass of it is given (RQ's
    pool hands its workers plain ``Job`` by default)."""
    return job_class if isinstance(job_class, type) and issubclass(job_class, AllowedJob) else AllowedJob


_BEAT_EVERY = 1.0
"""Seconds between unpipelined heartbeats and suspension checks of a busy worker."""


_TAKE = """
local id = redis.call("LMOVE", KEYS[1], KEYS[2], "LEFT", "RIGHT")
if not id then
    return false
end
return {id, redis.call("HGETALL", ARGV[1] .. id)}
"""
"""RQ's dequeue of one queue (LMOVE to the intermediate queue) and its ``Job.fetch``
(HGETALL) in one round trip; EVAL, not EVALSHA: never a NOSCRIPT after a Redis restart."""


_START = deadlines.CLAIM_FUNCTION + """
local state = ""
if ARGV[1] == "1" then
    state = claim(KEYS[1])
end
local ttl = tonumber(ARGV[6])
redis.call("HSET", KEYS[2], "id", ARGV[2], "job_id", ARGV[3], "created_at", ARGV[4], "last_heartbeat", ARGV[4],
           "worker_name", ARGV[5])
redis.call("EXPIRE", KEYS[2], ttl)
redis.call("ZADD", KEYS[3], ARGV[8], ARGV[2])
redis.call("EXPIRE", KEYS[3], ttl + 60)
redis.call("ZADD", KEYS[4], ARGV[9], ARGV[3] .. ":" .. ARGV[2])
redis.call("SADD", KEYS[5], ARGV[3] .. ":" .. ARGV[2])
redis.call("EXPIRE", KEYS[5], ttl)
redis.call("HSET", KEYS[6], "state", "busy", "last_heartbeat", ARGV[7])
redis.call("EXPIRE", KEYS[6], ttl)
redis.call("HSET", KEYS[1], "last_heartbeat", ARGV[7], "status", "started", "started_at", ARGV[7],
           "worker_name", ARGV[5])
redis.call("PERSIST", KEYS[1])
local backlog = 0
if KEYS[8] then
    redis.call("LREM", KEYS[7], 1, ARGV[3])
    backlog = redis.call("LLEN", KEYS[8])
end
return {state, backlog}
"""
"""A job's start (``ScimWorker.prepare_execution``), with its claim first when ``ARGV[1]`` is 1.

KEYS: the job's hash, its execution's hash, the job's executions, the started registry, the
worker's execution index, the worker's hash, then (one queue only) the intermediate queue and
the queue. ARGV: claim?, execution id, job id, execution time (epoch seconds), worker name,
heartbeat TTL, execution time (RQ's text), the scores in the job's executions and in the
started registry. Returns the claim's state ("" when none was made) and the queue's length.

The writes are RQ 3.0's, in its order (``Execution.create``, ``set_state``, ``heartbeat``,
``Job.prepare_for_execution``, ``prepare_job_execution``): the worker's index expires with
the heartbeat's TTL, which RQ sets right after its own ``ttl + 60``."""

_SUCCEED = """
redis.call("DEL", KEYS[2])
redis.call("ZREM", KEYS[4], ARGV[2] .. ":" .. ARGV[1])
redis.call("ZREM", KEYS[3], ARGV[1])
redis.call("SREM", KEYS[5], ARGV[2] .. ":" .. ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl == 0 then
    redis.call("DEL", KEYS[1], KEYS[8], KEYS[9], KEYS[7], KEYS[3])
else
    redis.call("HSET", KEYS[1], "status", "finished", "started_at", ARGV[4], "ended_at", ARGV[5])
    redis.call("XADD", KEYS[7], "MAXLEN", "~", "10", "*", unpack(ARGV, 6))
    if ttl == -1 then
        redis.call("PERSIST", KEYS[7])
    else
        redis.call("EXPIRE", KEYS[7], ttl)
        redis.call("EXPIRE", KEYS[1], ttl)
    end
end
redis.call("HSET", KEYS[6], "state", "idle")
"""
"""A job's success (``ScimWorker.handle_job_success``). KEYS: the job's hash, its execution's
hash, the job's executions, the started registry, the worker's execution index, the worker's
hash, the job's result stream, its dependents and dependencies keys. ARGV: execution id, job
id, result TTL (0: the job is deleted), started and ended at (RQ's text), then the result's
fields (``Result.serialize``). RQ 3.0's writes, in its order: ``Execution.delete``, then
``Job.delete``'s keys or the job's outcome (``Result.save``), then the worker's IDLE state."""


class ScimWorker(SimpleWorker):
    # Reconnect to a restarted Redis within seconds (RQ's default backs off up to 60 s,
    # longer than the front waits for a write).
    max_connection_wait_time = 2.0

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("worker_ttl", defaults.WORKER_TTL)
        kwargs.setdefault("maintenance_interval", defaults.MAINTENANCE_INTERVAL)
        kwargs.setdefault("serializer", OrjsonSerializer)
        kwargs["job_class"] = _allowed(kwargs.get("job_class"))
        handlers = list(kwargs.pop("exception_handlers", None) or [])
        kwargs["exception_handlers"] = [_count_failure, *handlers]
        self._beat_at = self._suspension_checked_at = float("-inf")
        self._stored_state: str | None = None  # the worker's state as Redis has it
        self._prepared: str | None = None  # id of the job prepare_execution prepared whole
        self._backlog = False  # the queue held more jobs when the last one started
        self._started_keys: dict[str, str] = {}  # queue name → its started registry's key
        super().__init__(*args, **kwargs)
        for queue in self.queues:  # RQ's pool hands over queues built for plain Job: their
            queue.job_class = self.job_class  # registry clean-ups would call planted callbacks
        self.log_result_lifespan = False
        self.log_job_description = False

    def work(self, *args, **kwargs) -> bool:
        # RQ's pool asks every worker to fork a scheduler; the pool's parent runs it instead.
        kwargs["with_scheduler"] = False
        return super().work(*args, **kwargs)

    def execute_job(self, job: Job, queue) -> None:
        reason = refusal(job, self.job_class.functions)
        if reason is None:
            super().execute_job(job, queue)
            return
        # Nothing of it is imported or run, and it is not kept: a failed-registry entry would
        # keep a planted payload as long as the planted failure_ttl says. Only the queue's
        # hold on it and its hash go (RQ's own delete reads more of the planted hash).
        JOB_FAILURES.labels("RefusedJob").inc()
        log.error("refused job %r from queue %s: %s; deleted without running (who else writes to this Redis?)",
                  job.id[:100], queue.name, reason)
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.delete(job.key)
            pipe.execute()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        if pipeline is None and timeout is None and time.monotonic() - self._beat_at < _BEAT_EVERY:
            return
        self._beat_at = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline=None) -> None:
        if pipeline is None and state == self._stored_state:
            self._state = state
            return
        super().set_state(state, pipeline)
        self._stored_state = state

    def check_for_suspension(self, burst: bool) -> None:
        if time.monotonic() - self._suspension_checked_at < _BEAT_EVERY:
            return
        self._suspension_checked_at = time.monotonic()
        super().check_for_suspension(burst)

    def clean_registries(self) -> None:
        super().clean_registries()
        for queue in self.queues:  # failed jobs bounded in count too, not only by their TTL
            try:
                failures.trim_failed(self.connection, queue.name)
            except RedisError as exc:
                log.warning("could not trim failed jobs of %s: %s", queue.name, exc)

    # ---- the job's round trips (above): RQ's bookkeeping of a job, without what nothing reads
    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None):
        """While the queue has a backlog, the next job is taken and read in one round trip
        (``_TAKE``) instead of RQ's two (LMOVE, then the job's HGETALL). RQ's own dequeue
        runs otherwise: it blocks on an empty queue, and reconnects after a Redis error."""
        if self._backlog and len(self._ordered_queues) == 1 and self.get_redis_server_version() >= (6, 2, 0):
            self._backlog = False
            try:
                taken = self._take(self._ordered_queues[0])
            except (RedisConnectionError, RedisTimeoutError):
                taken = None  # RQ's dequeue retries until Redis answers again
            if taken is not None:
                self.heartbeat()
                return taken
        return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)

    def _take(self, queue: Queue) -> tuple[Job, Queue] | None:
        """RQ's ``Queue.dequeue_any`` for one queue that is not empty, in one script: the job
        moves to the intermediate queue as RQ's LMOVE does (its clean-up then covers a worker
        that dies before ``prepare_execution``), and a job whose hash is gone is passed over
        as RQ passes it over. None: the queue is empty."""
        while True:
            reply = self.connection.eval(_TAKE, 2, queue.key, queue.intermediate_queue_key,
                                         self.job_class.redis_job_namespace_prefix)
            if not reply:
                return None
            job_id, fields = as_text(reply[0]), reply[1]
            if not fields:
                continue
            job = self.job_class(job_id, connection=self.connection, serializer=self.serializer)
            job.restore(dict(zip(fields[::2], fields[1::2])))
            job.redis_server_version = self.get_redis_server_version()
            self.log.info("Worker %s: %s: %s", self.name, queue.name, job.id)
            return job, queue

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's two preparations (``prepare_execution``, then ``prepare_job_execution`` in
        ``perform_job``) in one script (``_START``), which also claims a write batch
        (``libs.bus.deadlines``; ``AllowedJob.start_claim``, where ``apply_writes`` reads it):
        the execution in the started registry and the worker's index (what a killed worker's
        job is found by: ``bury``, RQ's clean-up), the worker busy with its heartbeat stretched
        over the job, and the job STARTED, persisted and off the intermediate queue. One script
        is also what RQ's intermediate queue clean-up wants: a job is never off that queue
        without a started-registry entry. The job's ``last_heartbeat`` field is written once
        (``prepare_for_execution`` sets it too)."""
        ttl = self.get_heartbeat_ttl(job)
        execution = Execution(id=uuid4().hex, job_id=job.id, connection=self.connection, worker_name=self.name)
        execution._job = job
        started = execution.created_at
        self.executions[execution.id] = execution
        self.last_heartbeat = started
        self._beat_at = time.monotonic()
        self._state = self._stored_state = WorkerStatus.BUSY
        job.worker_name, job.last_heartbeat, job.started_at = self.name, started, started
        job._status = JobStatus.STARTED
        claim = isinstance(job, AllowedJob) and current_name(job.func_name) in job.claimed
        single = len(self.queues) == 1  # what perform_job passes RQ's prepare_job_execution
        keys = [job.key, execution.key, ExecutionRegistry.key_template.format(job.id),
                self._started_key(job.origin), self.executions_key, self.key]
        if single:  # and a backlog: the next job in one round trip
            keys += [self.queues[0].intermediate_queue_key, self.queues[0].key]
        timestamp = current_timestamp()
        state, backlog = self.connection.eval(
            _START, len(keys), *keys, int(claim), execution.id, job.id, started.timestamp(), self.name, ttl,
            utcformat(started), timestamp + ttl + 60, timestamp + ttl)  # ttl > 0: get_heartbeat_ttl
        if claim:
            job.start_claim = as_text(state)
        self._backlog = single and backlog > 0
        self._prepared = job.id
        return execution

    def _started_key(self, queue_name: str) -> str:
        """The key of ``queue_name``'s started registry (``Job.started_job_registry``'s)."""
        key = self._started_keys.get(queue_name)
        if key is None:
            key = self._started_keys[queue_name] = StartedJobRegistry(queue_name, connection=self.connection).key
        return key

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        if self._prepared == job.id:  # done with the execution (prepare_execution, above)
            self._prepared = None
            return
        super().prepare_job_execution(job, remove_from_intermediate_queue)

    def handle_execution_ended(self, job: Job, queue, heartbeat_ttl: int) -> None:
        # RQ also writes the job hash's last_heartbeat here, a round trip of its own, to cover
        # the success or failure callback about to run: an AllowedJob has none, and the
        # outcome's script follows at once. The started registry's score (what decides
        # that a job was abandoned) is not touched by it in RQ 3.0.
        job.ended_at = now()

    def handle_job_success(self, job: Job, queue, started_job_registry, execution: Execution) -> None:
        """RQ's success in one script (``_SUCCEED``), without what nothing of scimbus reads.

        The job's outcome (its status, the result stream the front waits on, the TTL of both)
        and the end of its execution (started registry, the worker's index) commit together,
        as in RQ, with the worker's IDLE state (a round trip of its own in RQ), but:

        - no WATCH and read of the job's dependents (two round trips): scimbus enqueues no
          job that depends on another (``depends_on``);
        - no re-save of the whole job hash (its writes serialized again): only the fields the
          run changed (``status``, ``started_at``, ``ended_at``); the rest was saved at the
          enqueue and by ``prepare_execution``;
        - no entry in the finished registry: nothing reads it (the front reads the result
          stream; ``rq info`` counts queued, started and failed jobs), and its entries
          only lapsed after ``RESULT_TTL``;
        - no worker statistics (``successful_job_count``, ``total_working_time``): nothing
          of scimbus reads them (``rq info -v`` shows 0 finished);
        - no EXPIRE of the job's dependents and dependencies keys, which it never has.

        A job kept for no time (``result_ttl=0``: a delivery) is deleted in the same
        script, with what RQ's ``Job.delete`` deletes of it; RQ first reads its
        dependents, its status and its executions (twice): 15 round trips a delivery, 3
        here. A job with a repeat or a rate limit gets RQ's own handling."""
        if job.repeats_left or job.has_rate_limit:
            super().handle_job_success(job, queue, started_job_registry, execution)
            return
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        job._status = JobStatus.FINISHED
        self.executions.pop(execution.id, None)  # RQ's cleanup_execution
        keys = [job.key, execution.key, ExecutionRegistry.key_template.format(job.id), self._started_key(job.origin),
                self.executions_key, self.key, Result.get_key(job.id)]
        args = [execution.id, job.id, result_ttl]
        if result_ttl == 0:
            # Executions of earlier runs (a worker died) lapse with their own TTL.
            keys += [job.dependents_key, job.dependencies_key]
        else:
            result = Result(job_id=job.id, type=Result.Type.SUCCESSFUL, connection=self.connection,
                            return_value=job._result, worker_name=self.name, serializer=job.serializer,
                            execution_id=execution.id, execution_started_at=execution.created_at,
                            execution_ended_at=job.ended_at)
            args += [utcformat(job.started_at), utcformat(job.ended_at)]
            for field, value in result.serialize().items():
                args += (field, value)
        # The worker's IDLE state goes with it, but only in Redis: until the job is done
        # (perform_job returns), the worker must stay BUSY in this process, where RQ's
        # SIGTERM handler reads it; IDLE there, the handler would raise StopRequested
        # inside the job's error handling (the job failed, the worker going on).
        self.connection.eval(_SUCCEED, len(keys), *keys, *args)
        self._stored_state = WorkerStatus.IDLE  # SimpleWorker's set_state(IDLE) next: no write

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker's default (timeout + 60 s) would leave a killed worker's job stranded
        # for over a minute; the job can never legitimately run past its timeout.
        return int(job.timeout or defaults.WORKER_TTL) + defaults.ABANDONED_GRACE


class _Pool(WorkerPool):
    """RQ's pool, which also runs the queue's scheduler each time it checks on its workers
    (about once a second), freezes its objects before each fork, and clears up after a
    worker that died as soon as it reaps it."""

    def __init__(self, *args, scheduler: PoolScheduler, janitor: Redis, redis_url: str | None = None,
                 **kwargs) -> None:
        kwargs["job_class"] = _allowed(kwargs.get("job_class"))  # its clean-ups load jobs too
        super().__init__(*args, **kwargs)
        self.scheduler = scheduler
        self.janitor = janitor  # with timeouts, unlike the workers' connection (blocking dequeues)
        self.redis_url = redis_url

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO"):
        """RQ's worker process, whose client is built from the URL (``_run_worker``). RQ's own
        rebuilds it from the parent client's class and pool arguments, which for a Sentinel
        client makes a plain pool of ``SentinelManagedConnection`` without its sentinels."""
        process = super().get_worker_process(name, burst, _sleep, logging_level)
        if self.redis_url is None:  # built from a client alone (tests): RQ's way
            return process
        process._target = _run_worker
        process._args = (self.redis_url, name, self._queue_names)
        return process

    def check_workers(self, respawn: bool = True) -> None:
        super().check_workers(respawn)
        self.scheduler.tick()

    def handle_dead_worker(self, worker_data) -> None:
        super().handle_dead_worker(worker_data)
        self.bury(worker_data.name)

    def bury(self, worker_name: str) -> None:
        """Hand the job a dead worker held back to RQ now, and strike the worker off.

        RQ finds such a job only once its started-registry entry expires: a write's job
        timeout + 5 s (15 s), a delivery's 65 s, while the front waits for the write and
        the downstream application for its change. The pool knows sooner: it has reaped
        the process. The entries the worker's execution index names are expired at once,
        and RQ's own clean-up re-runs each job (its retries and their intervals apply) or
        fails it when none are left. A job that finished before the worker died is left
        alone (the clean-up re-runs only jobs still STARTED), and a worker that stopped
        after finishing its job holds none. Its registration goes too: a busy worker's
        lives as long as its job's timeout, and until then it counted as a live worker
        (``/readyz``, the scaling metrics)."""
        worker_key = self.worker_class.redis_worker_namespace_prefix + worker_name
        executions_key = WORKER_EXECUTIONS_KEY_TEMPLATE.format(worker_name)
        redis = self.janitor
        try:
            held = [as_text(key) for key in redis.smembers(executions_key)]
            for queue_name in self._queue_names if held else ():
                registry = StartedJobRegistry(queue_name, connection=redis, job_class=self.job_class,
                                              serializer=self.serializer)
                with redis.pipeline() as pipe:
                    for key in held:  # xx: only entries still there; ch: count those expired
                        pipe.zadd(registry.key, {key: 0}, xx=True, ch=True)
                    if not sum(pipe.execute()):
                        continue
                log.warning("worker %s died holding job %s; handing it back to the queue", worker_name,
                            ", ".join(parse_composite_key(key)[0] for key in held))
                registry.cleanup(exception_handlers=[_count_failure])
            with redis.pipeline() as pipe:
                pipe.srem(REDIS_WORKER_KEYS, worker_key)
                for queue_name in self._queue_names:
                    pipe.srem(WORKERS_BY_QUEUE_KEY % queue_name, worker_key)
                pipe.delete(worker_key, executions_key)
                pipe.execute()
        except RedisError as exc:  # RQ's maintenance does it later
            log.warning("could not clear up after dead worker %s now: %s", worker_name, exc)
        except Exception:  # a bug must not stop the pool from respawning its workers
            log.exception("clearing up after dead worker %s failed", worker_name)

    def start_worker(self, *args, **kwargs) -> None:
        gc.collect()  # garbage frozen now would never be freed
        gc.freeze()
        super().start_worker(*args, **kwargs)


def _run_worker(redis_url: str, worker_name: str, queue_names, *, worker_class=ScimWorker, serializer=OrjsonSerializer,
                job_class=AllowedJob, queue_class=None, exception_handlers=None, burst: bool = False,
                logging_level: str = "INFO", _sleep: float = 0) -> None:
    """``rq.worker_pool.run_worker`` with the client from ``connect``: a Sentinel URL gives a
    client that finds the primary again after a failover (RQ reconnects after a connection
    error, ``ScimWorker.max_connection_wait_time``)."""
    connection = connect(redis_url)
    queue_class = queue_class or Queue
    queues = [queue_class(name, connection=connection) for name in queue_names]
    worker = worker_class(queues, name=worker_name, connection=connection, serializer=serializer, job_class=job_class,
                          queue_class=queue_class, exception_handlers=exception_handlers)
    time.sleep(_sleep)
    worker.work(burst=burst, with_scheduler=True, logging_level=logging_level)


def start_pool(settings: Settings, queue: str, serializer, processes: int) -> None:
    """``processes`` workers on ``queue`` and the queue's scheduler, until SIGTERM."""
    from libs.web import logs

    logs.configure(settings)  # before RQ adds handlers of its own: its housekeeping goes to DEBUG
    # Everything is imported: freeze it now, so that the collection before each fork walks
    # only what came after. The imports leave no garbage (a full collection here frees
    # nothing), but walking their ~70,000 objects took 26-65 ms of a cold start.
    gc.freeze()
    scheduler = PoolScheduler(queue, settings.redis_url, serializer)
    pool = _Pool([queue], connection=connect(settings.redis_url), num_workers=processes,
                 worker_class=ScimWorker, serializer=serializer, scheduler=scheduler, redis_url=settings.redis_url,
                 janitor=connect(settings.redis_url, socket_timeout=5, socket_connect_timeout=5))
    try:
        pool.start(logging_level=logs.rq_level(settings.log_level))
    finally:
        scheduler.stop()
