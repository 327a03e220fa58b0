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
