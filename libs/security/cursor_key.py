"""The key that signs paging cursors: a random key of its own, never one derived from a token.

Cursors travel in URLs (proxy logs, browser history). They were signed with a key derived
from the bearer token(s), so anyone holding one cursor could test guesses of the token
offline (a weak ``SCIM_TOKEN`` would fall), and rotating the token broke every cursor.
Migration 0005 stores 32 random bytes in ``service_keys``: every reader process and replica
shares them without any setting (a file under var/ would differ per container), and a read-only
connection reads them. ``SCIM_CURSOR_SECRET``, when set, is used instead. The key is kept in
clear: a forged cursor only moves a client within a query it is already allowed to make.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from libs.config import Settings
from libs.scim.errors import Unavailable
from libs.store.access import engine_of
from libs.store.directory import DirectoryStore
from libs.store.session import read_reconnecting
from libs.store.tables import service_keys

log = logging.getLogger("scimbus.cursors")

NAME = "cursor"


def cursor_secret(settings: Settings, engine: Engine | DirectoryStore) -> str:
    if settings.cursor_secret:
        return settings.cursor_secret
    try:
        value = read_reconnecting(engine_of(engine), lambda conn: conn.execute(
            select(service_keys.c.value).where(service_keys.c.name == NAME)).scalar())
    except SQLAlchemyError as exc:
        raise Unavailable("The cursor key cannot be read; retry later.") from exc
    if not value:
        log.error("service_keys holds no cursor key: run scimbus migrate")
        raise Unavailable("Cursor paging is not available; retry later.")
    return value
