"""Job functions for the bus tests (enqueued by dotted path, like the real one)."""

from __future__ import annotations

from pathlib import Path


def echo(payload: dict) -> dict:
    return {"results": [{"status": 201, "body": {"id": w["resource_id"]}, "version": 1} for w in payload["writes"]]}


def flaky(payload: dict) -> dict:
    """Fails on its first run (as if the database blinked), succeeds on the retry."""
    marker = Path(payload["writes"][0]["meta"]["marker"])
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionError("database went away")
    return echo(payload)


def broken(payload: dict) -> dict:
    raise RuntimeError("a bug")


def inspect(payload: dict) -> dict:
    """What RQ's bookkeeping shows of the job while it runs (``test_worker_bookkeeping``)."""
    from rq import get_current_job
    from rq.registry import StartedJobRegistry

    job = get_current_job()
    redis = job.connection
    started = StartedJobRegistry(job.origin, connection=redis).key
    worker_key = f"rq:worker:{job.worker_name}"
    seen = {
        "status": redis.hget(job.key, "status").decode(),
        "job_ttl": redis.ttl(job.key),
        "started": [key.decode() for key in redis.zrange(started, 0, -1)],
        "worker_executions": sorted(key.decode() for key in redis.smembers(f"{worker_key}:executions")),
        "intermediate": redis.lrange(f"rq:queue:{job.origin}:intermediate", 0, -1),
        "worker_state": redis.hget(worker_key, "state").decode(),
        "worker_ttl": redis.ttl(worker_key),
        "abandoned_at": redis.zrange(started, 0, -1, withscores=True)[0][1],
        "now": redis.time()[0],
    }
    return {**echo(payload), "seen": seen}
