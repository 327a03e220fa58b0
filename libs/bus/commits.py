"""The WAL position of each app's last committed write, kept in Redis for the reader.

Read-your-writes with PostgreSQL replicas, by construction: a worker records, after its
batch committed and before it publishes the result the front answers from, the position
of the primary's WAL at or past that commit (``record``). A read that follows reads the
position first (``latest``) and is served by a replica only once that replica has replayed
at least that far (``libs.store.replicas``). Whoever wrote, the next read of the app sees
it: no cookie or header that Entra would have to send back.

Per app, not per client: clients of one app read the same resources, and a read seeing
another client's newer write is no staleness. Positions are bytes of WAL since 0/0 (an
integer, ``pg_lsn - '0/0'``) and only ever grow: a slower worker's older position never
replaces a newer one.

Recorded only while a reader reads replicas. Most sites run none, and there the query and
the script are a round trip each per batch for nothing (~10% of a worker's CPU with one
write per batch). So a reader given replicas announces it: a key (``READERS``) holding a
token, created by whichever reader process finds it missing (``announce``) and refreshed
every ``REFRESH`` seconds, well within its ``TTL``. A worker looks at the key at most once
per ``CHECK_INTERVAL`` (``Announced``) and records while it exists; when it cannot tell
(Redis error), it records.

A worker's cached "no readers" makes a gap: a worker that looked at time ``s``, just before
the key was created at ``A``, skips the batches it commits until ``s + CHECK_INTERVAL``, and
the writes committed before ``A`` have no position at all. A fence closes both: a reader
process that sees a token not yet fenced reads the primary only, waits ``FENCE`` (the check
interval and a margin) from when it saw the token, records for every app it serves the
primary's current WAL position, then marks the token fenced (``FENCED``, ``fenced``).
Replicas serve a read only when the announcement it sees is the fenced one. A write a
worker skipped committed before that worker's check, so before ``s + CHECK_INTERVAL <
A + CHECK_INTERVAL``: before the fence's position was taken, which covers it. A worker
that looked after ``A`` saw the key and recorded.

A read gets the announcement, the fenced token and the position in one command
(``latest_announced``). A token never comes back once its key is gone (expired, Redis
restarted, or failed over to a node without it): the next reader makes a new one, so a
read that sees the fenced token knows the key existed without a break since before the
fence, and a read that sees another token or none goes to the primary until the new one
is fenced. After a Redis restart that lost everything, that fence's position also covers
the positions the restart lost.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

log = logging.getLogger("scimbus.bus")

_KEY = "scimbus:commit-lsn:{app}"
_TTL = 24 * 3600
"""Seconds a position is kept after the app's last write; later, any replica is far past it."""

READERS = "scimbus:replica-readers"
FENCED = "scimbus:replica-readers:fenced"
TTL = 30
"""Seconds an announcement lives without a refresh: a reader gone that long costs nothing more."""
REFRESH = 5.0
"""Seconds between two refreshes of the announcement by a reader process."""
CHECK_INTERVAL = 1.0
"""Seconds a worker keeps what it saw of the announcement (one EXISTS per interval at most)."""
FENCE = CHECK_INTERVAL + 0.5
"""Seconds a reader reads the primary after it saw a new announcement; the margin is for
the hosts' clocks running at slightly different rates (only durations are compared)."""

_RAISE = """
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
if tonumber(ARGV[1]) > current then redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2]) return 1 end
redis.call("EXPIRE", KEYS[1], ARGV[2])
return 0
"""

_ANNOUNCE = """
local token = redis.call("GET", KEYS[1])
if token then
  redis.call("EXPIRE", KEYS[1], ARGV[2])
  redis.call("EXPIRE", KEYS[2], ARGV[2])
else
  token = ARGV[1]
  redis.call("SET", KEYS[1], token, "EX", ARGV[2])
end
return {token, redis.call("GET", KEYS[2])}
"""


def record(redis: Redis, positions: dict[str, int]) -> None:
    """Raise each app's recorded position to at least the one given."""
    if not positions:
        return
    pipe = redis.pipeline(transaction=False)
    for app, lsn in positions.items():
        pipe.eval(_RAISE, 1, _KEY.format(app=app), int(lsn), _TTL)
    pipe.execute()


def latest(redis: Redis, app: str) -> int:
    """The app's last recorded commit position (0: none recorded)."""
    value = redis.get(_KEY.format(app=app))
    return int(value) if value else 0


def announce(redis: Redis, token: str) -> tuple[str, str | None]:
    """Announce that a reader reads replicas (a new announcement with ``token`` if there was
    none, else a refresh); the announcement's token and the last fenced one."""
    current, fenced = redis.eval(_ANNOUNCE, 2, READERS, FENCED, token, TTL)
    return _text(current), (_text(fenced) if fenced else None)


def fenced(redis: Redis, token: str) -> None:
    """Mark the announcement ``token`` fenced: its fence's positions are recorded."""
    redis.set(FENCED, token, ex=TTL)


def latest_announced(redis: Redis, app: str) -> tuple[str | None, str | None, int]:
    """At one instant: the announcement's token, the fenced token (None: none) and the
    app's last recorded commit position."""
    token, fenced_token, value = redis.mget(READERS, FENCED, _KEY.format(app=app))
    return (_text(token) if token else None), (_text(fenced_token) if fenced_token else None), \
        (int(value) if value else 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Announced:
    """Whether a reader reads replicas, as a worker sees it: asked at most once per ``interval``."""

    def __init__(self, interval: float = CHECK_INTERVAL) -> None:
        self.interval = interval
        self._until = float("-inf")
        self._announced = True

    def __call__(self, redis: Redis) -> bool:
        # The clock is read before asking: the answer is no older than this, which is
        # what the fence's timing relies on.
        now = time.monotonic()
        if now < self._until:
            return self._announced
        try:
            self._announced = bool(redis.exists(READERS))
        except RedisError as exc:
            log.warning("replica readers unknown (%s): recording the commit position", type(exc).__name__)
            return True
        self._until = now + self.interval
        return self._announced
