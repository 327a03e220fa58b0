"""The cursor codec: signed, bound to its query, time-limited."""

from __future__ import annotations

import time

import pytest

from libs.config import Settings
from libs.scim.errors import ExpiredCursor, InvalidCursor
from services.reader.cursors import CursorCodec

DIGEST = CursorCodec.query_digest("default", "User", 'userName sw "a"')


def test_a_cursor_opens_to_the_key_it_was_issued_for_and_is_url_safe():
    codec = CursorCodec(Settings(), lambda: "k")
    cursor = codec.issue(42, DIGEST)
    assert codec.open(cursor, DIGEST) == 42
    assert all(c.isalnum() or c in "-._~" for c in cursor)


def test_a_cursor_signed_with_another_key_or_for_another_query_is_invalid():
    cursor = CursorCodec(Settings(), lambda: "k").issue(42, DIGEST)
    with pytest.raises(InvalidCursor):
        CursorCodec(Settings(), lambda: "other").open(cursor, DIGEST)
    with pytest.raises(InvalidCursor):
        CursorCodec(Settings(), lambda: "k").open(cursor, CursorCodec.query_digest("default", "Group", None))
    with pytest.raises(InvalidCursor):
        CursorCodec(Settings(), lambda: "k").open(cursor[:-2] + "xx", DIGEST)


def test_a_cursor_older_than_its_ttl_has_expired():
    codec = CursorCodec(Settings(cursor_ttl=1), lambda: "k")
    cursor = codec.issue(1, DIGEST)
    time.sleep(2.1)
    with pytest.raises(ExpiredCursor):
        codec.open(cursor, DIGEST)


@pytest.mark.db
def test_the_cursor_key_is_the_databases_own_random_key_unless_one_is_set(database_url, tmp_path):
    from libs.config import load_settings
    from libs.security.cursor_key import cursor_secret
    from libs.store.session import create_engine_from_url

    engine = create_engine_from_url(database_url, read_only=True)
    settings = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_TOKEN": "t" * 32})
    made = cursor_secret(settings, engine)
    assert len(made) >= 43 and "t" * 32 not in made and made == cursor_secret(settings, engine)
    chosen = load_settings({"SCIM_VAR_DIR": str(tmp_path), "SCIM_CURSOR_SECRET": "mine"})
    assert cursor_secret(chosen, engine) == "mine"
    engine.dispose()
