"""Cursor paging (RFC 9865): signed, time-limited keyset cursors.

A cursor carries the primary key of the last resource of the page it ends and a digest
of the query it belongs to (app, resource type, filter), signed with HMAC and stamped by
itsdangerous (already Flask's dependency) so it cannot be forged, moved to another query,
or used after ``SCIM_CURSOR_TTL`` seconds. The next page is the rows after that key in
key order: resources created or deleted meanwhile never shift the pages, so a resource
that exists throughout the traversal appears exactly once. Its text is URL-safe base64
plus ``.``, all RFC 3986 unreserved characters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from libs.config import Settings
from libs.scim.errors import ExpiredCursor, InvalidCursor

_SALT = "scimbus.cursor.v1"


class CursorCodec:
    """``secret``: the signing key, asked for at the first cursor (libs/security/cursor_key.py)."""

    def __init__(self, settings: Settings, secret: Callable[[], str]) -> None:
        self._secret = secret
        self._signer: URLSafeTimedSerializer | None = None
        self.ttl = settings.cursor_ttl

    @property
    def _serializer(self) -> URLSafeTimedSerializer:
        if self._signer is None:
            self._signer = URLSafeTimedSerializer(self._secret(), salt=_SALT)
        return self._signer

    @staticmethod
    def query_digest(app: str, resource_type: str, filter_text: Any) -> str:
        return hashlib.sha256(f"{app}\n{resource_type}\n{filter_text or ''}".encode()).hexdigest()[:16]

    def issue(self, after_pk: int, digest: str) -> str:
        return self._serializer.dumps([after_pk, digest])

    def open(self, cursor: str, digest: str) -> int:
        """The key the page starts after; ``InvalidCursor``/``ExpiredCursor`` otherwise."""
        try:
            after_pk, signed_digest = self._serializer.loads(cursor, max_age=self.ttl)
        except SignatureExpired:
            raise ExpiredCursor(f"The cursor is older than {self.ttl} seconds; start again with an empty "
                                "cursor.") from None
        except (BadSignature, ValueError, TypeError):
            raise InvalidCursor() from None
        if signed_digest != digest or not isinstance(after_pk, int):
            raise InvalidCursor("The cursor belongs to another query: keep filter and endpoint unchanged.")
        return after_pk
