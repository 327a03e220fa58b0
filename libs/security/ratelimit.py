"""Requests per token per window, counted in Redis so every front and reader process
shares one budget (a fixed window: one INCR and one EXPIRE per request, pipelined).

Off by default: Entra quarantines an app that refuses too many of its requests. When Redis
cannot be reached the request is let through and a warning logged — the limiter protects
the service, it must not become the reason it is down.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.exceptions import RedisError

from libs.scim.errors import TooManyRequests

log = logging.getLogger("scimbus.ratelimit")


class RateLimiter:
    def __init__(self, redis: Redis, limit: int, window: int, prefix: str = "scimbus:ratelimit") -> None:
        self.redis, self.limit, self.window, self.prefix = redis, limit, window, prefix

    def hit(self, app: str, name: str) -> None:
        """Count one request of this credential; ``TooManyRequests`` once over the limit."""
        now = time.time()
        slot = int(now // self.window)
        key = f"{self.prefix}:{app}:{name}:{slot}"
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.window + 1)
            count = pipe.execute()[0]
        except RedisError as exc:
            log.warning("rate limiter unavailable, request let through: %s", type(exc).__name__)
            return
        if count > self.limit:
            retry_after = max(1, int((slot + 1) * self.window - now + 0.999))
            raise TooManyRequests(f"More than {self.limit} requests in {self.window} s with this credential.",
                                  headers={"Retry-After": str(retry_after)})
