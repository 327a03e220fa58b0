"""A reader's fence (services/reader/reads.py) that cannot take the primary's position lets no
replica serve: the announcement stays unfenced and the fence is tried again."""

from __future__ import annotations

from libs.bus import commits
from libs.config import Settings
from libs.store.access import open_reader_store
from services.reader import reads


def test_a_fence_without_the_primary_leaves_reads_on_the_primary_and_tries_again(redis_conn):
    down = open_reader_store(Settings(), "postgresql://nobody@127.0.0.1:9/none?connect_timeout=2")
    fence = reads.Fence(redis_conn, down, ["default"], wait=0)
    assert fence.step() == reads._RETRY
    token, fenced, _ = commits.latest_announced(redis_conn, "default")
    assert token is not None and fenced is None
    assert fence.passed(token, fenced) is False
    fence.stop()


def test_a_fence_that_cannot_reach_redis_warns_once_per_outage(redis_conn, caplog):
    from redis import Redis

    from tests.support.servers import free_port

    fence = reads.Fence(Redis(port=free_port(), socket_connect_timeout=0.2), None, ["default"], wait=60)
    with caplog.at_level("DEBUG", logger=reads.log.name):
        assert [fence.step() for _ in range(3)] == [reads._RETRY] * 3
        fence.redis = redis_conn
        fence.step()
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels[:3] == [("WARNING", "announcing the replica reader failed (ConnectionError)"),
                          ("DEBUG", "announcing the replica reader failed (ConnectionError)"),
                          ("DEBUG", "announcing the replica reader failed (ConnectionError)")]
    assert ("INFO", "replica reader announced again") in levels
