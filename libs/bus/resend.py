"""Put a batch back on the queue after a Redis failover, unless it is there or answered.

Replication from the Redis primary to its replica is asynchronous: when Sentinel promotes
the replica, the last commands the old primary took may be missing. For a batch the front
waits on, that is one of:

- its job never reached the new primary (lost with the enqueue);
- its job hash is there but the queue entry or the worker's claim is not, or the worker
  that held it died with its connection (RQ finds such a job only after its timeout);
- its result never reached the new primary.

In each case the front, reconnected, sends the batch again under the same id
(``requeue_args``): the script pushes it unless its result stream exists (the wait reads
it) or its id is still queued. A batch may therefore run twice; each write in it applies
once all the same, because the worker records each write's id in the transaction of its
change and answers a recorded write from that record (``services.worker.jobs``). Nothing is
acknowledged before the worker committed it to the database, so a lost Redis write never
loses an acknowledged SCIM write.

Why not ``WAIT 1 <ms>`` after each enqueue: it would make the loss rarer, not impossible
(a replica may still fall behind after WAIT times out), and costs the replica's round trip
on every write; the resend makes the outcome exact whatever Redis lost.
"""

from __future__ import annotations

from rq.results import Result

from libs.bus import deadlines

REQUEUE_SCRIPT = """
-- KEYS: job hash, queue, RQ's set of queues, the job's result stream
-- ARGV: job id, push direction (unused: always the tail), TTL, field, value, ...
if redis.call("EXISTS", KEYS[4]) == 1 then return 0 end
if redis.call("LPOS", KEYS[2], ARGV[1]) then return 0 end
redis.call("SADD", KEYS[3], KEYS[2])
redis.call("HSET", KEYS[1], unpack(ARGV, 4))
local ttl = tonumber(ARGV[3])
if ttl and ttl > 0 then redis.call("EXPIRE", KEYS[1], ttl) end
redis.call("RPUSH", KEYS[2], ARGV[1])
return 1
"""

RECONNECT_PAUSE = 0.1
"""Seconds between two attempts while the sentinels have yet to name a new primary."""


def requeue_args(enqueue_args: list, batch_id: str) -> list:
    """EVAL arguments of ``REQUEUE_SCRIPT`` from those of the bus's enqueue
    (``[script, 3, job key, queue key, queues key, *argv]``)."""
    _, _, job_key, queue_key, queues_key, *argv = enqueue_args
    # The last field is the job's deadline, stamped on Redis's clock as the enqueue does
    # (``libs.bus.deadlines``): the time the front has left, not a fresh timeout.
    return [deadlines.STAMP + REQUEUE_SCRIPT, 4, job_key, queue_key, queues_key, Result.get_key(batch_id), *argv]
