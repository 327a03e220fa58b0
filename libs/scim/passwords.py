"""The ``password`` attribute at rest: an argon2id hash, never the clear text (RFC 7643 §4.1.1).

``password`` is ``mutability: writeOnly, returned: never``; the store keeps only the
salted hash argon2-cffi makes (its defaults follow RFC 9106's second recommendation), so
a stolen database gives no password away. The front hashes before it enqueues
(``hash_in_resource``, ``hash_in_patch``), so the clear text never reaches the queue
either; the job says so (``meta["password_hashed"]``) and the worker keeps the hash as
given. ``check`` is what a connector that authenticates users would call.
"""

from __future__ import annotations

from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from libs.scim.schemas import ResourceSchema

_HASHER = PasswordHasher()


def hash_password(clear: str) -> str:
    return _HASHER.hash(clear)


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


def hash_in_patch(body: Any, schema: ResourceSchema) -> Any:
    """A copy of a parsed-valid PatchOp body whose password values are hashed: by path
    (``password``, its URN form) or as a key of a path-less value."""
    if not isinstance(body, dict):
        return body
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
