"""The ``password`` attribute at rest: an argon2id hash, never the clear text (RFC 7643 §4.1.1).

``password`` is ``mutability: writeOnly, returned: never``; the store keeps only the
salted hash argon2-cffi makes (its defaults follow RFC 9106's second recommendation), so
a stolen database gives no password away. The front hashes before it enqueues
(``hash_in_resource``, ``hash_in_patch``), so the clear text never reaches the queue
either; the job says so (``meta["password_hashed"]``) and the worker keeps the hash as
given. ``check`` is what a connector that authenticates users would call.

A hash costs 64 MiB and ~0.1 s of CPU on purpose, so it is also a lever against the
server (issue 16): a write sets ``password`` at most once (``count_in_patch``; a PATCH
naming it twice is 400 before anything is hashed), and each process hashes at most
``SCIM_PASSWORD_HASHES`` passwords at once (``limit_concurrency``). A write that finds no
free slot within ``_SLOT_WAIT`` seconds is 429 with ``Retry-After``: Entra retries a 429
after that delay, and only that request, while a 503 counts as a failure it escrows for
hours; and the cause is load the client can wait out, not a fault of the server.
"""

from __future__ import annotations

import threading
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from libs.scim.errors import InvalidValue, TooManyRequests
from libs.scim.schemas import ResourceSchema

_HASHER = PasswordHasher()
_SLOT_WAIT = 2.0
"""Seconds a write waits for a free hashing slot before it is answered 429 (a dozen hashes)."""
_RETRY_AFTER = "2"


class _Slots:
    """A bounded number of hashes running at once in this process."""

    def __init__(self, slots: int) -> None:
        self.size = slots
        self.semaphore = threading.BoundedSemaphore(slots)


_slots = _Slots(2)


def limit_concurrency(slots: int) -> None:
    """Hash at most ``slots`` passwords at once in this process (the front calls it at start)."""
    global _slots
    _slots = _Slots(slots)


def hash_password(clear: str) -> str:
    slots = _slots
    if not slots.semaphore.acquire(timeout=_SLOT_WAIT):
        raise TooManyRequests(f"This server hashes at most {slots.size} passwords at once per process and all "
                              "of them are taken; retry after the time given in Retry-After.",
                              headers={"Retry-After": _RETRY_AFTER})
    try:
        return _HASHER.hash(clear)
    finally:
        slots.semaphore.release()


def check(stored_hash: str, clear: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, clear)
    except (VerificationError, InvalidHashError):
        return False


def _is_password(schema: ResourceSchema, key: Any) -> bool:
    ref = schema.resolve(key) if isinstance(key, str) else None
    return ref is not None and ref.sub is None and ref.schema == schema.core.urn and ref.attribute.name == "password"


def hash_in_resource(doc: dict[str, Any]) -> dict[str, Any]:
    """A validated resource with its ``password`` (if any) hashed, in place."""
    if isinstance(doc.get("password"), str):
        doc["password"] = hash_password(doc["password"])
    return doc


def count_in_resource(doc: Any, schema: ResourceSchema) -> int:
    """How many ``password`` values a resource body carries (its URN-qualified forms included)."""
    if not isinstance(doc, dict):
        return 0
    count = 0
    for key, value in doc.items():
        if _is_password(schema, key) and isinstance(value, str):
            count += 1
        elif isinstance(key, str) and key.lower() == schema.core.urn.lower() and isinstance(value, dict):
            count += sum(1 for k, v in value.items() if _is_password(schema, k) and isinstance(v, str))
    return count


def _operations(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return [op for key, ops in body.items() if isinstance(key, str) and key.lower() == "operations"
            and isinstance(ops, list) for op in ops if isinstance(op, dict)]


def count_in_patch(body: Any, schema: ResourceSchema) -> int:
    """How many ``password`` values the operations of a PatchOp body set."""
    count = 0
    for op in _operations(body):
        fields = {k.lower(): k for k in op if isinstance(k, str)}
        path = op.get(fields.get("path", "path"))
        value = op.get(fields["value"]) if "value" in fields else None
        if path is not None:
            count += _is_password(schema, path) and isinstance(value, str)
        else:
            count += count_in_resource(value, schema)
    return count


def hash_in_patch(body: Any, schema: ResourceSchema) -> Any:
    """A copy of a parsed-valid PatchOp body whose password values are hashed: by path
    (``password``, its URN form) or as a key of a path-less value. A body that sets the
    password more than once is ``InvalidValue``, before any is hashed."""
    if not isinstance(body, dict):
        return body
    if count_in_patch(body, schema) > 1:
        raise InvalidValue("A write may set password once; this PATCH sets it more than once.")
    out = dict(body)
    for key, ops in body.items():
        if not (isinstance(key, str) and key.lower() == "operations" and isinstance(ops, list)):
            continue
        out[key] = [_hash_operation(op, schema) if isinstance(op, dict) else op for op in ops]
    return out


def _hash_operation(op: dict[str, Any], schema: ResourceSchema) -> dict[str, Any]:
    fields = {k.lower(): k for k in op if isinstance(k, str)}
    path = op.get(fields.get("path", "path"))
    value_key = fields.get("value")
    if value_key is None:
        return op
    value = op[value_key]
    out = dict(op)
    if path is not None:
        if _is_password(schema, path) and isinstance(value, str):
            out[value_key] = hash_password(value)
        return out
    if isinstance(value, dict):
        new_value = dict(value)
        for k, v in value.items():
            if _is_password(schema, k) and isinstance(v, str):
                new_value[k] = hash_password(v)
            elif isinstance(k, str) and k.lower() == schema.core.urn.lower() and isinstance(v, dict):
                new_value[k] = {ik: hash_password(iv) if _is_password(schema, ik) and isinstance(iv, str) else iv
                                for ik, iv in v.items()}
        out[value_key] = new_value
    return out


def seal(doc: dict[str, Any], previous: dict[str, Any] | None, *, keep_if_absent: bool,
         hashed: bool = False) -> None:
    """Hash a newly written ``password`` in ``doc``, in place.

    A value equal to the previous stored hash is that hash (a PATCH that did not touch the
    password). With ``keep_if_absent`` (PUT), a body without ``password`` keeps the stored
    one: a client cannot send back a value it can never read. ``hashed``: the front hashed
    it already.
    """
    old = (previous or {}).get("password")
    new = doc.get("password")
    if new is None:
        if keep_if_absent and old is not None:
            doc["password"] = old
        return
    if new != old and not hashed:
        doc["password"] = hash_password(new)
