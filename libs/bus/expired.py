"""The writes workers did not apply because their front had answered 503: a list for the operator.

Each entry names the write (id, op, resource, app, request id), the bus job and why
(``abandoned``: its front gave it up; ``expired``: a worker found it past its deadline), never
its body. The list is capped (``KEEP``): the newest entries stay, so it cannot grow without
bound. Read it with ``recent(redis, queue)`` or ``redis-cli LRANGE scimbus:expired-writes:<queue> 0 -1``.
"""

from __future__ import annotations

import time
from typing import Iterable

import orjson
from redis import Redis

from libs.bus.messages import WriteJob

KEEP = 1000
"""Newest expired writes kept per queue."""


def key(queue: str) -> str:
    return f"scimbus:expired-writes:{queue}"


def record(redis: Redis, queue: str, batch_id: str, reason: str, writes: Iterable[WriteJob]) -> None:
    entries = [orjson.dumps({"at": time.time(), "reason": reason, "batch": batch_id, "write": w.job_id,
                             "op": w.op, "app": w.app, "resource_type": w.resource_type,
                             "resource_id": w.resource_id, "request_id": w.request_id}) for w in writes]
    if not entries:
        return
    with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(key(queue), *entries)
        pipe.ltrim(key(queue), 0, KEEP - 1)
        pipe.execute()


def recent(redis: Redis, queue: str, count: int = KEEP) -> list[dict]:
    """The newest ``count`` entries, newest first."""
    return [orjson.loads(raw) for raw in redis.lrange(key(queue), 0, count - 1)]
