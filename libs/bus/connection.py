"""Redis clients from ``SCIM_REDIS_URL``: one host, or a primary found through Sentinel.

Every role builds its clients here (front, reader's rate limits, workers and their pool,
scheduler, deliverer, sweeper, probes, the CLI), so a Sentinel URL reaches all of them:

- ``redis://[[user]:password@]host:6379/0``, ``rediss://…`` (TLS), ``unix://…``: one Redis,
  as redis-py's ``Redis.from_url`` reads it.
- ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/mymaster[/db][?options]``
  (``rediss+sentinel://`` for TLS to the sentinels and the primary): the primary of the
  service ``mymaster`` as the sentinels name it. The user and password are the data
  nodes' (Redis's ``requirepass``/ACL); the sentinels' own, when they have one, go in the
  query: ``sentinel_password``, ``sentinel_username``.

Failover is redis-py's: a client from ``Sentinel.master_for`` asks the sentinels for the
primary each time it opens a connection, so any connection error followed by a reconnect
(redis-py's own retries, RQ's reconnect loop, the front's resend) reaches the new primary.
A connection still open to a demoted primary gets ``READONLY`` for a write; redis-py's
``SentinelManagedConnection`` turns that into a ``ConnectionError`` and drops the
connection, which makes it the same case. Nothing here re-implements that; this module
only parses the URL (redis-py has no URL form for Sentinel) and keeps the password out of
every error message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis import Redis

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
PLAIN_SCHEMES = ("redis", "rediss", "unix")
_SENTINEL_OPTIONS = {"sentinel_password", "sentinel_username", "min_other_sentinels"}
_SENTINEL_TIMEOUT = 1.0
"""Seconds a question to one sentinel may take: a dead sentinel is skipped for the next one."""


class RedisUrlError(ValueError):
    """``SCIM_REDIS_URL`` cannot be used; the message never holds the URL (it has the password)."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    options: dict[str, str] = field(default_factory=dict)


def parse_sentinel_url(url: str) -> SentinelTarget:
    """The parts of a ``redis+sentinel://`` URL (see the module's docstring)."""
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    if scheme not in SENTINEL_SCHEMES:
        raise RedisUrlError("SCIM_REDIS_URL is not a redis+sentinel:// URL")
    parts = urlsplit("sentinel://" + rest)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "26379")
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise RedisUrlError("SCIM_REDIS_URL names a sentinel that is not host:port "
                                "(redis+sentinel://[:password@]host1:26379,host2:26379/service[/db])")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise RedisUrlError("SCIM_REDIS_URL must name the sentinels' service and optionally a database: "
                            "redis+sentinel://[:password@]host1:26379,host2:26379/mymaster[/0]")
    options = dict(parse_qsl(parts.query))
    unknown = sorted(set(options) - _SENTINEL_OPTIONS)
    if unknown:
        raise RedisUrlError(f"SCIM_REDIS_URL has an unknown option {unknown[0]!r} "
                            f"(known: {', '.join(sorted(_SENTINEL_OPTIONS))})")
    if not options.get("min_other_sentinels", "0").isdigit():
        raise RedisUrlError("SCIM_REDIS_URL: min_other_sentinels must be a number")
    return SentinelTarget(sentinels, unquote(path[0]), int(path[1]) if len(path) == 2 else 0, username, password,
                          scheme == "rediss+sentinel", options)


def validate_url(url: str) -> None:
    """Raise ``RedisUrlError`` (a one-line message without the password) for a URL no
    client can be built from."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise RedisUrlError("SCIM_REDIS_URL is not a redis://, rediss://, unix:// or redis+sentinel:// URL")


def is_sentinel(url: str) -> bool:
    return url.startswith(tuple(s + "://" for s in SENTINEL_SCHEMES))


def connect(url: str, **kwargs: Any) -> Redis:
    """A client of the Redis ``url`` names (its primary, for a Sentinel URL). ``kwargs`` are
    redis-py's client options (timeouts, retry, health checks). Opens no connection: redis-py
    connects on the first command."""
    if not is_sentinel(url):
        return Redis.from_url(url, **kwargs)
    from redis.sentinel import Sentinel

    target = parse_sentinel_url(url)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": _SENTINEL_TIMEOUT, "socket_connect_timeout": _SENTINEL_TIMEOUT}
    if target.options.get("sentinel_password"):
        sentinel_kwargs["password"] = target.options["sentinel_password"]
    if target.options.get("sentinel_username"):
        sentinel_kwargs["username"] = target.options["sentinel_username"]
    if target.ssl:
        sentinel_kwargs["ssl"] = True
        kwargs.setdefault("ssl", True)
    sentinel = Sentinel(target.sentinels, min_other_sentinels=int(target.options.get("min_other_sentinels", 0)),
                        sentinel_kwargs=sentinel_kwargs)
    return sentinel.master_for(target.service, db=target.db, username=target.username, password=target.password,
                               **kwargs)
