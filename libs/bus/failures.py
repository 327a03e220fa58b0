"""Failed jobs in Redis: bounded in time and in count, and holding no password.

A job that fails its last retry stays in RQ's failed registry, its hash (with the writes it
carried) and its result alongside, for an operator to inspect:

- in time: ``defaults.FAILURE_TTL`` (RQ expires the hash and the registry entry);
- in count: ``trim_failed`` keeps the newest ``defaults.FAILED_KEEP`` of a queue (a broken
  deployment failing every write would otherwise fill Redis within the TTL); the workers
  call it with their registry maintenance (``libs.bus.rq_adapter``), and any periodic
  task (the sweeper) may too;
- no secret: ``redact_job`` replaces every password a write carries (a resource's
  ``password``, a PATCH operation's value for it) before RQ saves the failed job. The
  front sends argon2 hashes, never the clear password, but a hash is still an offline
  guessing target and has no business in an operator's view.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq.registry import FailedJobRegistry
from rq.results import Result

from libs.bus import defaults

REDACTED = "[redacted]"


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if isinstance(key, str) and key.lower() == "password":
                out[key] = REDACTED
            else:
                out[key] = _redact(item)
        if isinstance(out.get("path"), str) and out["path"].strip().lower().endswith("password") and "value" in out:
            out["value"] = REDACTED  # a PATCH operation {"op": "replace", "path": "password", "value": ...}
        return out
    if isinstance(value, list):
        return [_redact(item) for item in value]
    return value


def redact_payload(payload: Any) -> Any:
    """A copy of a job's payload with every password replaced by ``REDACTED``."""
    return _redact(payload)


def redact_job(job) -> None:
    """Redact the job's arguments in place; RQ writes them when it saves the failed job."""
    job.args = tuple(redact_payload(list(job.args)))


def trim_failed(redis: Redis, queue: str, keep: int = defaults.FAILED_KEEP) -> int:
    """Delete all but the newest ``keep`` failed jobs of ``queue`` (hash, result and registry
    entry); returns how many went. One ZCARD when under the bound."""
    registry = FailedJobRegistry(queue, connection=redis)
    excess = redis.zcard(registry.key) - keep
    if excess <= 0:
        return 0
    # Scores are expiry times (failure time + a fixed TTL): the lowest are the oldest.
    oldest = [raw.decode() if isinstance(raw, bytes) else raw
              for raw in redis.zrange(registry.key, 0, excess - 1)]
    with redis.pipeline(transaction=False) as pipe:
        for job_id in oldest:
            pipe.delete(f"rq:job:{job_id}", Result.get_key(job_id))
        pipe.zrem(registry.key, *oldest)
        pipe.execute()
    return len(oldest)
