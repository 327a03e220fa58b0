"""The cursor codec: signed, bound to its query, time-limited."""

from __future__ import annotations

import time

import pytest

from libs.config import Settings
from libs.scim.errors import ExpiredCursor, InvalidCursor
from services.reader.cursors import CursorCodec

DIGEST = CursorCodec.query_digest("default", "User", 'userName sw "a"')


def test_a_cursor_opens_to_the_key_it_was_issued_for_and_is_url_safe():
    codec = CursorCodec(Settings(token="t"))
    cursor = codec.issue(42, DIGEST)
    assert codec.open(cursor, DIGEST) == 42
    assert all(c.isalnum() or c in "-._~" for c in cursor)


def test_a_cursor_signed_with_another_key_or_for_another_query_is_invalid():
    cursor = CursorCodec(Settings(token="t")).issue(42, DIGEST)
    with pytest.raises(InvalidCursor):
        CursorCodec(Settings(token="other")).open(cursor, DIGEST)
    with pytest.raises(InvalidCursor):
        CursorCodec(Settings(token="t")).open(cursor, CursorCodec.query_digest("default", "Group", None))
    with pytest.raises(InvalidCursor):
        CursorCodec(Settings(token="t")).open(cursor[:-2] + "xx", DIGEST)


def test_a_cursor_older_than_its_ttl_has_expired():
    codec = CursorCodec(Settings(token="t", cursor_ttl=1))
    cursor = codec.issue(1, DIGEST)
    time.sleep(2.1)
    with pytest.raises(ExpiredCursor):
        codec.open(cursor, DIGEST)
