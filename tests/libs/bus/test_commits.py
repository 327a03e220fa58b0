"""The commit positions' announcement (libs/bus/commits.py) on a real Redis: what a reader
announces, what a fence marks, and what a worker sees of it, at most once per interval."""

from __future__ import annotations

import time

from redis import Redis
from redis.exceptions import ConnectionError

from libs.bus import commits


def test_an_announcement_keeps_its_token_until_its_key_is_gone_then_a_new_one_begins(redis_conn):
    assert commits.latest_announced(redis_conn, "default") == (None, None, 0)
    assert commits.announce(redis_conn, "first") == ("first", None)
    assert commits.announce(redis_conn, "second") == ("first", None), "a refresh keeps the announcement"
    assert 0 < redis_conn.ttl(commits.READERS) <= commits.TTL
    commits.fenced(redis_conn, "first")
    commits.record(redis_conn, {"default": 42})
    assert commits.latest_announced(redis_conn, "default") == ("first", "first", 42)
    assert commits.announce(redis_conn, "third") == ("first", "first")

    redis_conn.delete(commits.READERS)  # expired, or Redis restarted without it
    assert commits.announce(redis_conn, "fourth") == ("fourth", "first"), "a new announcement, not fenced"
    assert commits.latest_announced(redis_conn, "default") == ("fourth", "first", 42)


def test_a_refresh_keeps_the_fenced_mark_as_long_as_the_announcement(redis_conn):
    commits.announce(redis_conn, "token")
    commits.fenced(redis_conn, "token")
    redis_conn.expire(commits.FENCED, 2)
    commits.announce(redis_conn, "other")
    assert redis_conn.ttl(commits.FENCED) > 2


class CountingRedis(Redis):
    asked = 0

    def exists(self, *names):
        self.asked += 1
        return super().exists(*names)


def test_a_worker_asks_at_most_once_per_interval_and_sees_an_announcement_after_it(redis_url, redis_conn):
    redis = CountingRedis.from_url(redis_url)
    announced = commits.Announced(interval=0.5)
    assert announced(redis) is False
    commits.announce(redis_conn, "token")
    assert [announced(redis) for _ in range(100)] == [False] * 100, "what it saw is kept for the interval"
    assert redis.asked == 1
    time.sleep(0.5)
    assert announced(redis) is True
    assert redis.asked == 2


class Unreachable:
    asked = 0

    def exists(self, *names):
        self.asked += 1
        raise ConnectionError("Redis is failing over")


def test_a_worker_that_cannot_tell_records_and_asks_again_next_time():
    unreachable = Unreachable()
    announced = commits.Announced()
    assert announced(unreachable) is True
    assert announced(unreachable) is True
    assert unreachable.asked == 2
