"""A write's deadline, and who decides its fate: a 503 means "not applied, and never will be".

The front waits for a batch of writes for at most its remaining ``SCIM_WRITE_TIMEOUT``, but
the batch's job may sit in the queue for ``QUEUED_TTL`` (while the workers are stopped,
crashed or still starting). Without a rule, a worker that got there later would apply a
write the client was told failed, after the newer writes that followed (a disable landing
after the re-enable Entra sent next). The rule, in three atomic steps on the job's own RQ
hash (one Redis, one clock):

- **stamp** (inside the enqueue script): ``scim_deadline`` = Redis ``TIME`` + what is left
  of the front's wait − ``DEADLINE_MARGIN``, in milliseconds. Redis's clock is the only
  clock involved (front and workers compare nothing of their own hosts), and the margin
  puts the workers' cut-off before the moment the front can answer 503, whatever the
  latency of the enqueue.
- **claim** (a worker, before it applies anything): the job becomes ``claimed`` unless it
  is already ``abandoned`` or ``expired``, or Redis ``TIME`` is past its deadline (then it
  becomes ``expired``). A job claimed once stays claimed: a re-run after its worker died
  applies it (the idempotency records make that run at most once). A scimbus worker claims
  a write batch as it starts its job, in the same script and round trip
  (``libs.bus.rq_adapter.ScimWorker.prepare_execution``: ``CLAIM_FUNCTION``); ``apply_writes``
  claims it itself (``claim``) when another RQ worker runs it.
- **give up** (the front, when its wait ends without an answer): the job becomes
  ``abandoned`` unless it is ``claimed``. Abandoned, the front answers 503 and no worker
  will ever apply it. Claimed, the write may be committing: the front waits on, bounded by
  the job's timeout, and if the outcome is still unknown it answers a 500 that says so
  (``OutcomeUnknown``), never a 503.

So a write the front acknowledged (201/200/204) was claimed before it was applied and is
never dropped, and a write the front answered 503 was abandoned or expired before any
worker claimed it and is never applied. Scripts go with EVAL (Redis caches them by digest):
never a NOSCRIPT after a Redis restart.
"""

from __future__ import annotations

from redis import Redis

DEADLINE_FIELD = "scim_deadline"
"""Field of the job's RQ hash: its deadline in Redis-clock milliseconds since the epoch."""

STATE_FIELD = "scim_state"
"""Field of the job's RQ hash: absent (queued), ``claimed``, ``abandoned`` or ``expired``."""

CLAIMED, ABANDONED, EXPIRED, GONE = "claimed", "abandoned", "expired", "gone"

DEADLINE_MARGIN = 0.25
"""Seconds between the workers' cut-off and the end of the front's wait: more than the
one-way latency of an enqueue, so a worker's claim can never land after the front has
decided to answer 503 even when the front cannot reach Redis to give up."""

STAMP = """
local stamp_t = redis.call("TIME")
ARGV[#ARGV] = string.format("%.0f", stamp_t[1] * 1000 + math.floor(stamp_t[2] / 1000) + tonumber(ARGV[#ARGV]))
"""
"""Prefix of the enqueue script: turns its last field value (the milliseconds the front will
wait, minus the margin) into the deadline on Redis's clock, before RQ's script saves the hash."""

CLAIM_FUNCTION = """
local function unsettled(key)
    local state = redis.call("HGET", key, "scim_state")
    if state then
        return state
    end
    if redis.call("EXISTS", key) == 0 then
        return "gone"
    end
    return nil
end

local function claim(key)
    local state = unsettled(key)
    if state then
        return state
    end
    local deadline = redis.call("HGET", key, "scim_deadline")
    if deadline then
        local t = redis.call("TIME")
        if t[1] * 1000 + math.floor(t[2] / 1000) >= tonumber(deadline) then
            redis.call("HSET", key, "scim_state", "expired")
            return "expired"
        end
    end
    redis.call("HSET", key, "scim_state", "claimed")
    return "claimed"
end
"""
"""Lua functions for a script to start with: ``claim(key)`` is the worker's claim on the job
whose hash is ``key``, and the state it leaves (``unsettled`` is where both ends start: a job
already settled keeps its state, a job gone (its hash expired or lost with a Redis failover)
is "gone"). ``claim`` runs here alone, and inside the worker's start of a job
(``libs.bus.rq_adapter.ScimWorker.prepare_execution``), which takes no extra round trip for it."""

_CLAIM = CLAIM_FUNCTION + 'return claim(KEYS[1])\n'

_GIVE_UP = CLAIM_FUNCTION + """
local state = unsettled(KEYS[1])
if state then
    return state
end
redis.call("HSET", KEYS[1], "scim_state", "abandoned")
return "abandoned"
"""


def stamp_fields(wait: float) -> list:
    """The last field pair of an enqueue's HSET: ``STAMP`` replaces the value by the deadline."""
    return [DEADLINE_FIELD, str(max(0, int((wait - DEADLINE_MARGIN) * 1000)))]


def claim(redis: Redis, job_key: str) -> str:
    """A worker's claim on a job before applying it: ``CLAIMED`` (apply it), else
    ``ABANDONED``/``EXPIRED`` (the front answered or will answer 503: never apply it) or
    ``GONE`` (no such job). A job without a deadline (enqueued by an older front) is claimed."""
    return _text(redis.eval(_CLAIM, 1, job_key))


def give_up(redis: Redis, job_key: str) -> str:
    """The front's end of waiting: ``ABANDONED`` (never applied: answer 503), ``EXPIRED`` or
    ``GONE`` (never applied either), or ``CLAIMED`` (a worker has it: wait for the outcome)."""
    return _text(redis.eval(_GIVE_UP, 1, job_key))


def never_applied(state: str) -> bool:
    return state in (ABANDONED, EXPIRED, GONE)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
