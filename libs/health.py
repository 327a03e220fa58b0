"""Readiness checks shared by every role (liveness needs none: answering is being alive).

Each check returns ``None`` when the dependency is usable, else a short reason that the
``/readyz`` answer shows; none raises, so a probe never sees a 500 or a traceback. They
run on every probe (Kubernetes: every few seconds per pod), so each is one round trip
with a short timeout.
"""

from __future__ import annotations

from redis import Redis
from redis.exceptions import RedisError
from rq import worker_registration
from rq.queue import Queue
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from libs.store.session import read_reconnecting


def redis_problem(redis: Redis) -> str | None:
    try:
        redis.ping()
    except RedisError as exc:
        return f"redis unreachable: {type(exc).__name__}"
    return None


def database_problem(engine: Engine) -> str | None:
    try:
        read_reconnecting(engine, lambda conn: conn.execute(text("SELECT 1")))
    except SQLAlchemyError as exc:
        return f"database unreachable: {type(exc).__name__}"
    return None


def live_workers(redis: Redis, queue_name: str) -> int:
    """Workers of the queue whose registration key still exists (it expires with the heartbeat).

    RQ's set ``rq:workers:<queue>`` keeps a killed worker's name until maintenance cleans
    it; the per-worker hash expires after ``worker_ttl``, so its existence is the liveness.
    """
    keys = list(worker_registration.get_keys(queue=Queue(queue_name, connection=redis), connection=redis))
    if not keys:
        return 0
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return sum(pipe.execute())


def workers_problem(redis: Redis, queue_name: str) -> str | None:
    """The front is not ready while no worker would pick up its writes (each would 503)."""
    problem = redis_problem(redis)
    if problem:
        return problem
    try:
        if live_workers(redis, queue_name) == 0:
            return f"no live worker on queue {queue_name}"
    except RedisError as exc:
        return f"redis unreachable: {type(exc).__name__}"
    return None
