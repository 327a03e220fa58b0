"""The per-credential rate limiter on a real Redis (issue 5)."""

from __future__ import annotations

import uuid

import pytest
from redis import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from libs.scim.errors import TooManyRequests
from libs.security.ratelimit import RateLimiter

pytestmark = pytest.mark.redis


def test_requests_over_the_limit_get_429_with_retry_after(redis_conn):
    limiter = RateLimiter(redis_conn, limit=3, window=60, prefix=f"t:{uuid.uuid4().hex}")
    allowed = 0
    with pytest.raises(TooManyRequests) as caught:
        for _ in range(10):
            limiter.hit("default", "entra")
            allowed += 1
    assert allowed in (3, 4, 5, 6)  # at most two windows' worth, if the burst straddles an edge
    assert 1 <= int(caught.value.headers["Retry-After"]) <= 60
    limiter.hit("default", "other")  # each credential has its own budget


def test_two_limiters_on_one_redis_share_the_budget(redis_conn):
    prefix = f"t:{uuid.uuid4().hex}"
    a, b = (RateLimiter(redis_conn, limit=4, window=3600, prefix=prefix) for _ in range(2))
    for limiter in (a, b, a, b):
        limiter.hit("acme", "entra")
    with pytest.raises(TooManyRequests):
        a.hit("acme", "entra")


def test_an_unreachable_redis_lets_requests_through():
    dead = Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    RateLimiter(dead, limit=1, window=60).hit("default", "entra")
    RateLimiter(dead, limit=1, window=60).hit("default", "entra")
