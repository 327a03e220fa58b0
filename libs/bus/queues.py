"""Enqueue writes and wait for their results: the front's whole view of the bus.

One bus job carries a *batch* of writes (``services.worker.jobs.apply_writes``): each job
costs a worker ~0.55 ms of RQ bookkeeping (three round trips, its deadline claim included,
three replies parsed, ~32 Redis commands run mostly inside two scripts, with
``libs.bus.rq_adapter.ScimWorker``'s trims) and ~1 ms of transaction around its writes, so
the front coalesces the writes its threads receive at the same moment (``Coalescer``) and
the worker applies them in one transaction, where one write's failure never fails its
neighbours.

The wait reads the job's RQ result stream with a blocking ``XREAD`` (no polling). A
``RETRIED`` entry means a worker died or hit a transient failure and RQ re-queued the job:
the front keeps waiting on the same stream. ``FAILED`` after the last retry becomes
``Unavailable`` (503 + Retry-After: every run rolled back).

A job answered is spent: once the front has read its success, nothing reads its hash or its
result stream again (only a wait sends a batch again, and a wait is over once answered), so
the front deletes both in its next round trip (``_spent``) instead of leaving them to
``RESULT_TTL``. Kept, they were Redis's memory: ~1.7 KB of hash and ~4.7 KB of stream per
batch (a stream's first node is allocated whole), for 60 s, so Redis grew with the write
rate (107 MB at 869 writes/s, on the way to 150 MB near 1,200). A failed job is kept for
the operator (``FAILURE_TTL``).

A 503 means "not applied, and never will be" (``libs.bus.deadlines``): each job carries
its deadline, stamped on Redis's clock at the enqueue; when the front's wait ends it gives
the job up, atomically, unless a worker has claimed it. Given up, the write is 503 and no
worker will apply it; claimed, the front waits on up to ``commit_wait`` (the job's
timeout) for the outcome, and answers ``OutcomeUnknown`` (500) if it still has none.
"""

from __future__ import annotations

import collections
import copy
import threading
import time
import uuid

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from rq import Queue, Retry

from libs.bus import deadlines, defaults, resend, rq_adapter
from libs.bus.messages import WriteJob, WriteResult
from libs.bus.serializer import OrjsonSerializer
from libs.scim.errors import OutcomeUnknown, ScimError, Unavailable

_ENQUEUE = deadlines.STAMP + 'redis.call("SADD", KEYS[3], KEYS[2])\n' + rq_adapter.ENQUEUE_SCRIPT
"""RQ's own atomic unique enqueue (check the id is new, save the job hash, set its TTL, push
its id), plus the queue's entry in RQ's set of queues that ``Queue.enqueue`` adds in a MULTI
of its own, and the job's deadline on Redis's clock (``deadlines.STAMP``). Sent with EVAL,
not EVALSHA: it can share a pipeline with the first wait and never meets NOSCRIPT after a
Redis restart (Redis caches it by its digest all the same)."""

_BLOCK_MS = 2000
"""Longest single XREAD block: a socket timeout of the client must never cut a wait short."""

_MIN_WAIT = 0.05
"""Seconds of a batch's time (past the deadline margin) below which it is not enqueued:
too little left to be answered."""

_REDIS_PAUSE = 0.2
"""Seconds between attempts to reach Redis again while a write's fate is unknown."""

_SPENT_PER_TRIP = 64
"""Most keys of answered jobs one enqueue deletes on its way (the rest wait for the next)."""


class Bus:
    """The front's handle on the write queue (lives in ``app.extensions['scim.bus']``)."""

    def __init__(self, redis: Redis, queue_name: str, *, job_timeout: int,
                 function: str = defaults.JOB_FUNCTION, max_batch: int = defaults.MAX_BATCH,
                 in_flight: int = 1, linger: float = 0.0, resends: bool = False) -> None:
        self.redis = redis
        self.resends = resends
        """After a lost connection, reconnect and send the batch again (Sentinel: a failover
        names a new primary within seconds); else wait for Redis to answer again."""
        self.function = function
        self.queue = Queue(queue_name, connection=redis, serializer=OrjsonSerializer)
        self.job_timeout = job_timeout
        self.commit_wait = float(job_timeout)
        """Seconds the front waits on past its deadline for a write a worker claimed: the job
        cannot run longer than its timeout."""
        self._job_hash = rq_adapter.JobHash(
            self.queue, function, timeout=job_timeout, result_ttl=defaults.RESULT_TTL,
            failure_ttl=defaults.FAILURE_TTL, ttl=defaults.QUEUED_TTL,
            retry=Retry(max=defaults.RETRIES, interval=defaults.RETRY_INTERVALS))
        self._spent: collections.deque[str] = collections.deque()
        """Keys of answered jobs (hash, result stream), deleted with the next enqueue; those
        a process leaves when it goes idle lapse after ``RESULT_TTL``."""
        self.coalescer = Coalescer(self, max_batch=max_batch, in_flight=in_flight, linger=linger,
                                   commit_wait=self.commit_wait)

    def _enqueue_args(self, batch_id: str, jobs: list[WriteJob], wait: float = defaults.QUEUED_TTL) -> list:
        """EVAL arguments putting one job holding ``jobs`` on the queue as
        ``Queue.enqueue(..., unique=True)`` would: the same job hash, so any RQ worker runs it,
        plus its deadline: ``wait`` seconds (what is left of the front's wait) from now."""
        fields = self._job_hash.fields(({"writes": [w.to_payload() for w in jobs]},), f"{len(jobs)} writes")
        fields += deadlines.stamp_fields(wait)  # last: the script turns it into the deadline
        # The script answers 0 for an id already queued (a resent command): the wait then
        # reads that job's result.
        return [_ENQUEUE, 3, self._job_key(batch_id), self.queue.key, self.queue.redis_queues_keys, batch_id, "R",
                defaults.QUEUED_TTL, *fields]

    def submit_batch(self, batch_id: str, jobs: list[WriteJob], wait: float = defaults.QUEUED_TTL) -> None:
        """Enqueue without waiting (``await_batch`` waits): ``wait`` is the job's deadline from now."""
        try:
            self.redis.eval(*self._enqueue_args(batch_id, jobs, wait))
        except RedisError as exc:
            raise Unavailable("The write queue is unreachable; nothing was changed.") from exc

    def run_batch(self, batch_id: str, jobs: list[WriteJob], timeout: float) -> list[WriteResult]:
        """``submit_batch`` then ``await_batch``, the enqueue and the first wait in one round
        trip: each time a thread blocks on Redis and wakes again costs the front ~70 µs of CPU."""
        deadline = time.monotonic() + timeout
        try:
            # Taken here rather than by the pipeline, so a failure to connect (Redis down or
            # refusing) is known to have sent nothing: a sure 503, at once.
            connection = self.redis.connection_pool.get_connection()
        except RedisError as exc:
            raise Unavailable("The write queue is unreachable; nothing was queued; retry the request.") from exc
        pipe = self.redis.pipeline(transaction=False)
        pipe.connection = connection  # the pipeline's own slot: its reset() hands it back to the pool
        try:
            spent = self._take_spent()
            if spent:  # lost with a failed round trip, they lapse after RESULT_TTL
                pipe.unlink(*spent)
            pipe.eval(*self._enqueue_args(batch_id, jobs, timeout))
            pipe.xread({rq_adapter.result_key(batch_id): "0-0"}, block=_block_ms(timeout))
            *_, first = pipe.execute()
        except RedisError as exc:
            # Sent, and maybe queued (the first wait blocks up to 2 s after the enqueue's
            # answer): the wait settles it, sending the batch again after a failover, and
            # giving the job up once Redis answers again.
            return self._wait(batch_id, len(jobs), deadline, None, jobs=jobs, troubled=True,
                              reconnect=self.resends and isinstance(exc, RedisConnectionError))
        finally:
            pipe.reset()
        return self._wait(batch_id, len(jobs), deadline, first, jobs=jobs)

    def apply(self, job: WriteJob, timeout: float) -> WriteResult:
        """Apply one write (coalesced with concurrent ones) and return its result."""
        return self.coalescer.apply(job, timeout)

    def apply_in_order(self, jobs: list[WriteJob], timeout: float) -> list[WriteResult]:
        """Apply several writes in one job, in order (Bulk): each sees the ones before it."""
        return self.run_batch(uuid.uuid4().hex, jobs, timeout)

    def await_batch(self, batch_id: str, count: int, timeout: float) -> list[WriteResult]:
        return self._wait(batch_id, count, time.monotonic() + timeout, None)

    def _job_key(self, batch_id: str) -> str:
        key = self.queue.job_class.key_for(batch_id)
        return key.decode() if isinstance(key, bytes) else key

    def _wait(self, batch_id: str, count: int, deadline: float, response, *, jobs: list[WriteJob] | None = None,
              reconnect: bool = False, troubled: bool = False) -> list[WriteResult]:
        """Read the batch's result stream (``response``: a first XREAD answer already read)
        until ``deadline``; then give the job up (503) unless a worker claimed it, and wait
        on for a claimed one's outcome up to ``commit_wait``.

        A lost connection (Redis failover) with ``jobs`` known and time left: reconnect and
        send the batch again (``libs.bus.resend``). Any other Redis failure: try again until
        Redis answers; the fate of the job is unknown until then.

        ``troubled``: Redis failed since the enqueue was sent. Its data may have lost the
        job's claim (a failover's replica behind the primary, a restart without the last
        second of the append-only file) while a worker committed the writes: without a
        result, the outcome is unknown (500), not "never applied", though the job is still
        given up so that no worker applies it later."""
        key = rq_adapter.result_key(batch_id)
        last_id = "0-0"
        until = deadline
        claimed = False
        while True:
            try:
                if reconnect:
                    reconnect, last_id = False, "0-0"  # the new primary's stream: read it whole
                    time.sleep(resend.RECONNECT_PAUSE)
                    pipe = self.redis.pipeline(transaction=False)
                    wait = max(0.0, deadline - time.monotonic())
                    pipe.eval(*resend.requeue_args(self._enqueue_args(batch_id, jobs, wait), batch_id))
                    pipe.xread({key: last_id}, block=_block_ms(max(0.001, until - time.monotonic())))
                    _, response = pipe.execute()
                for entry_id, payload in (response[0][1] if response else ()):
                    last_id = entry_id
                    results = self._outcome(payload)
                    if results is not None:
                        self._spent.extend((self._job_key(batch_id), key))
                        if len(results) != count:
                            raise Unavailable("The worker answered a different batch; retry the request.")
                        return results
                response = None
                remaining = until - time.monotonic()
                if remaining <= 0:
                    if claimed:
                        raise OutcomeUnknown()
                    state = deadlines.give_up(self.redis, self._job_key(batch_id))
                    if troubled and state != deadlines.CLAIMED:
                        raise OutcomeUnknown()  # a claim may have been lost with Redis's data
                    if deadlines.never_applied(state):
                        raise Unavailable("No worker took the write in time; it was not applied and never "
                                          "will be; retry the request.")
                    claimed, until = True, deadline + self.commit_wait  # a worker has it: it may commit
                    continue
                response = self.redis.xread({key: last_id}, block=_block_ms(remaining))
            except RedisError as exc:
                # Its fate is unknown until Redis answers again: a worker may hold it.
                response, troubled = None, True
                if time.monotonic() >= deadline + self.commit_wait:
                    raise OutcomeUnknown() from None
                if (isinstance(exc, RedisConnectionError) and jobs is not None and self.resends
                        and deadline - time.monotonic() >= _MIN_WAIT + resend.RECONNECT_PAUSE):
                    reconnect = True  # a failover: the new primary may never have seen the batch
                    continue
                time.sleep(_REDIS_PAUSE)

    def _take_spent(self) -> list[str]:
        keys: list[str] = []
        try:
            while len(keys) < _SPENT_PER_TRIP:
                keys.append(self._spent.popleft())  # deque pops are atomic: no lock among threads
        except IndexError:
            pass
        return keys

    @staticmethod
    def _outcome(payload: dict[bytes, bytes]) -> list[WriteResult] | None:
        kind, value = rq_adapter.result_outcome(payload)
        if kind == rq_adapter.SUCCESSFUL:
            return [WriteResult.from_payload(r) for r in value["results"]]
        if kind == rq_adapter.RETRIED:
            return None
        raise Unavailable("The write failed in the worker; it has been logged. Retry the request.")


def _block_ms(seconds: float) -> int:
    return max(1, int(min(seconds * 1000, _BLOCK_MS)))


class _Batch:
    def __init__(self, deadline: float) -> None:
        self.id = uuid.uuid4().hex
        self.jobs: list[WriteJob] = []
        self.opened = time.monotonic()
        self.deadline = deadline
        """When the front stops waiting for the batch: its leader's deadline, the earliest of its writes'."""
        self.done = threading.Event()
        self.results: list[WriteResult] | None = None
        self.error: ScimError | None = None


class Coalescer:
    """Groups the writes a front process receives at the same moment into one bus job.

    Group commit: at most ``in_flight`` batches of this process are on the bus at a time.
    A write that finds a free slot leads a batch and submits it at once, so a sequential
    client (Entra's usual pace) sees no added latency; writes arriving while every slot is
    busy join the open batch, which goes out when a slot frees, or after ``slot_wait`` when
    none does (a batch held by a killed worker must not stall the process's writes). Batches
    therefore grow with the load by themselves, up to ``max_batch``; the leader waits for
    the one result and hands each follower its own.

    Each write is waited for at most its own timeout, slot included. A batch is waited for
    until its leader's deadline, so it takes followers only while it is younger than
    ``slot_wait``: while every slot is out (the workers are away, or scaled to zero and
    starting), the writes arriving later make batches of their own instead of joining one
    whose time runs out first, and none gets its 503 more than ``slot_wait`` before its own
    timeout, nor after it.

    Under concurrent load a leader also lingers ``linger`` seconds before sending (while its
    previous batch held more than one write): each bus job costs the worker, Redis and the
    database a fixed ~1.5 ms however many writes it carries, so on busy cores a few ms of
    waiting buys more throughput than it costs in latency (like PostgreSQL's commit_delay).
    """

    def __init__(self, bus: Bus, *, max_batch: int, in_flight: int, linger: float = 0.0,
                 slot_wait: float = defaults.SLOT_WAIT, commit_wait: float = 0.0) -> None:
        self.bus = bus
        self.commit_wait = commit_wait  # how long past its deadline a leader may wait (a claimed batch)
        self.max_batch = max_batch
        self.linger = linger
        self.slot_wait = slot_wait
        self._last_size = 0
        self._slots = threading.BoundedSemaphore(in_flight)
        self._spares = threading.BoundedSemaphore(in_flight)  # for batches that waited slot_wait
        self._lock = threading.Lock()
        self._open: _Batch | None = None

    def apply(self, job: WriteJob, timeout: float) -> WriteResult:
        arrived = time.monotonic()
        with self._lock:
            batch = self._open
            if batch is not None and arrived - batch.opened > self.slot_wait:
                batch = None  # it waits for a slot, and its time runs out before this write's
            leader = batch is None
            if leader:
                batch = self._open = _Batch(arrived + timeout)
            index = len(batch.jobs)
            batch.jobs.append(job)
            if len(batch.jobs) >= self.max_batch:
                self._open = None
        if leader:
            self._lead(batch)
        elif not batch.done.wait(batch.deadline + self.commit_wait - time.monotonic() + 5):
            # The leader answers by its deadline (a claimed batch: commit_wait later); never here.
            raise OutcomeUnknown()
        if batch.error is not None:
            raise copy.copy(batch.error)  # one exception object per raising thread
        assert batch.results is not None
        return batch.results[index]

    def _take_slot(self, deadline: float) -> threading.BoundedSemaphore:
        """An in-flight slot; after ``slot_wait`` a spare one. A batch out that long is stuck
        (its worker died, and RQ has yet to re-queue its job), waits for a worker to start, or
        is unusually long, and the next must not queue behind it; the spares still bound what
        one process puts on the bus while the workers are away (twice ``in_flight``), and past
        that a write waits for a slot until its deadline, then gets 503 (never enqueued)."""
        if self._slots.acquire(timeout=max(0.0, min(self.slot_wait, deadline - time.monotonic()))):
            return self._slots
        while True:
            for slot in (self._slots, self._spares):
                if slot.acquire(blocking=False):
                    return slot
            if time.monotonic() >= deadline:
                raise Unavailable("The write queue is saturated; retry the request.")
            time.sleep(0.05)

    def _lead(self, batch: _Batch) -> None:
        sent = False
        try:
            slot = self._take_slot(batch.deadline)
            try:
                if self.linger and self._last_size > 1 and len(batch.jobs) < self.max_batch:
                    time.sleep(self.linger)
                self._close(batch)
                self._last_size = len(batch.jobs)
                # What is left of the batch's time, not a fresh timeout: the slot's wait counts.
                remaining = batch.deadline - time.monotonic()
                if remaining - deadlines.DEADLINE_MARGIN < _MIN_WAIT:
                    raise Unavailable("The write queue is saturated; retry the request.")
                sent = True
                batch.results = self.bus.run_batch(batch.id, batch.jobs, remaining)
            finally:
                slot.release()
        except ScimError as exc:
            batch.error = exc
        except Exception:
            # A bug: once the batch may be queued, "not applied" (503) is no longer known.
            batch.error = OutcomeUnknown() if sent else Unavailable("The write could not be sent; retry the request.")
            raise
        finally:
            self._close(batch)  # also when no slot came: later writes must not join a failed batch
            batch.done.set()

    def _close(self, batch: _Batch) -> None:
        """Later writes start the next batch."""
        with self._lock:
            if self._open is batch:
                self._open = None
