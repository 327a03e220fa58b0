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
"""

from __future__ import annotations

from redis import Redis

_KEY = "scimbus:commit-lsn:{app}"
_TTL = 24 * 3600
"""Seconds a position is kept after the app's last write; later, any replica is far past it."""

_RAISE = """
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
if tonumber(ARGV[1]) > current then redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[2]) return 1 end
redis.call("EXPIRE", KEYS[1], ARGV[2])
return 0
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
