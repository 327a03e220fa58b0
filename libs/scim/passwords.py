"""The ``password`` attribute at rest: an argon2id hash, never the clear text (RFC 7643 §4.1.1).

``password`` is ``mutability: writeOnly, returned: never``; the store keeps only the
salted hash argon2-cffi makes (its defaults follow RFC 9106's second recommendation), so
a stolen database gives no password away. ``check`` is what a connector that
authenticates users would call.
"""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()


def hash_password(clear: str) -> str:
    return _HASHER.hash(clear)


def check(stored_hash: str, clear: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, clear)
    except (VerificationError, InvalidHashError):
        return False


def seal(doc: dict[str, Any], previous: dict[str, Any] | None, *, keep_if_absent: bool) -> None:
    """Hash a newly written ``password`` in ``doc``, in place.

    A value equal to the previous stored hash is that hash (a PATCH that did not touch the
    password). With ``keep_if_absent`` (PUT), a body without ``password`` keeps the stored
    one: a client cannot send back a value it can never read.
    """
    old = (previous or {}).get("password")
    new = doc.get("password")
    if new is None:
        if keep_if_absent and old is not None:
            doc["password"] = old
        return
    if new != old:
        doc["password"] = hash_password(new)
