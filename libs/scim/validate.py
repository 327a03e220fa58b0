"""Check and normalise a resource body against its schema (RFC 7643 §2, RFC 7644 §3.3).

``validate_resource`` turns what a client POSTs or PUTs (or what the PATCH engine built)
into the one document shape the store keeps: attribute names in canonical case, core
attributes at the top, each extension as an object under its URN, ``schemas`` listing
the core URN plus the extensions that have values. It never mutates its input and is
idempotent: ``validate_resource(validate_resource(x)) == validate_resource(x)``.

Choices, with their reasons:

- **Undeclared attributes** (in the core schema, in a known extension, under an unknown
  URN, or a sub-attribute a complex attribute lacks) are handed to the ``undeclared``
  callback: silently dropped by default, else as ``SCIM_UNKNOWN_ATTRIBUTES`` says
  (``libs.scim.undeclared``: ignore and report them, or reject with ``invalidPath``), the
  same policy as the PATCH engine's. RFC 7644 §3.3 only tells the server to ignore readOnly
  values and says nothing about unknown ones; Entra lets an admin map attributes we do not
  publish, and a 400 on every create would quarantine the job (entra-scim.md §4).
- **Unassigned means absent** (RFC 7643 §2.5): ``null``, ``""``, ``[]`` and ``{}`` values
  are dropped, so ``{"value": ""}`` as a manager, or ``""`` as a title (Entra P9, P16),
  clear the attribute. Required attributes (``userName``, Group ``displayName``) must
  therefore be non-empty, else ``InvalidValue``.
- **Dropped silently**: ``id``, ``meta`` and any other readOnly attribute or sub-attribute
  (user ``groups``, ``manager.displayName``, ``members.display``), and unknown URIs in
  ``schemas`` (Entra's legacy ADSCIM Group URI, §8). A missing ``schemas`` is tolerated.
- **Multi-valued attributes must be arrays** (``InvalidValue`` otherwise; Entra always
  sends arrays). Elements that end up empty are dropped; at most one element may carry
  ``primary: true``.
- **Types** (RFC 7643 §2.3): string, reference and binary are JSON strings (binary must be
  base64), boolean a JSON boolean (Entra's ``"True"``/``"False"`` strings are converted in
  ``libs.scim.entra``), integer a JSON integer, decimal a JSON number, dateTime an
  ``xsd:dateTime`` string kept exactly as sent. Strings and references longer than
  ``max_value_length`` are ``InvalidValue``; binaries may be up to ``MAX_BINARY_LENGTH``.
- **Group members** keep only ``value`` (a non-empty string: the member's id, resolved by
  the store) and ``type`` (``User``/``Group``, any case in, canonical case out).
- Everything else is stored exactly as sent (Entra's data fidelity rule, §4).
- The same attribute given twice (``name`` and ``name.givenName``, or a core name and its
  URN-qualified form) is merged; two different values for one leaf are ``InvalidSyntax``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from libs.scim import entra
from libs.scim.errors import InvalidSyntax, InvalidValue
from libs.scim.schemas import COMMON_ATTRIBUTES, GROUP_ATTRIBUTES, Attribute, ResourceSchema
from libs.scim.undeclared import Undeclared, names_in, silent

MAX_VALUE_LENGTH = 2048
"""Default longest string or reference value, in characters."""

MAX_BINARY_LENGTH = 65536
"""Longest base64 text of a binary value (x509 certificates run to a few KiB)."""

MEMBERS: Attribute = next(a for a in GROUP_ATTRIBUTES if a.name == "members")

_ABSENT = object()
_INDEX = re.compile(r"\[\d+\]")
_MEMBER_KEYS = frozenset(a.name.lower() for a in MEMBERS.sub_attributes)

_DATETIME = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?P<fraction>\.\d+)?(?P<zone>Z|z|[+-]\d{2}:\d{2})?"
)


def parse_datetime(text: Any) -> datetime | None:
    """An ``xsd:dateTime`` string as an aware datetime (no zone = UTC), or ``None`` if invalid."""
    if not isinstance(text, str):
        return None
    m = _DATETIME.fullmatch(text)
    if not m:
        return None
    zone = UTC
    if m["zone"] and m["zone"] not in ("Z", "z"):
        sign = 1 if m["zone"][0] == "+" else -1
        hours, minutes = int(m["zone"][1:3]), int(m["zone"][4:6])
        if hours > 14 or minutes > 59:
            return None
        zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
    micro = int((m["fraction"] or ".0")[1:7].ljust(6, "0"))
    try:
        return datetime(
            int(m["year"]),
            int(m["month"]),
            int(m["day"]),
            int(m["hour"]),
            int(m["minute"]),
            int(m["second"]),
            micro,
            tzinfo=zone,
        )
    except ValueError:
        return None


def is_unassigned(value: Any) -> bool:
    """RFC 7643 §2.5: null, empty string, empty array and empty object carry no value."""
    return value is None or (isinstance(value, (str, list, dict)) and not value)


def coerce_value(
    attribute: Attribute, value: Any, path_text: str, *, max_value_length: int = MAX_VALUE_LENGTH,
    undeclared: Undeclared = silent,
) -> Any:
    """Check one value of ``attribute`` and return its stored form; ``None`` means unassigned.

    The rules of the module docstring apply; ``path_text`` names the value in errors, and
    ``undeclared`` gets each sub-attribute the value carries that ``attribute`` lacks.
    """
    value = entra.normalise_value(attribute, value)
    if is_unassigned(value):
        return None
    if attribute.multi_valued:
        if not isinstance(value, list):
            raise InvalidValue(f"{path_text!r} is multi-valued: send a JSON array.")
        items = []
        for index, item in enumerate(value):
            coerced = _coerce_single(attribute, item, f"{path_text}[{index}]", max_value_length, undeclared)
            if coerced is not None:
                items.append(coerced)
        if sum(1 for i in items if isinstance(i, dict) and i.get("primary") is True) > 1:
            raise InvalidValue(f"At most one value of {path_text!r} may be primary (RFC 7643 §2.4).")
        return items or None
    return _coerce_single(attribute, value, path_text, max_value_length, undeclared)


def _coerce_single(attribute: Attribute, value: Any, path: str, max_len: int, undeclared: Undeclared) -> Any:
    if is_unassigned(value):
        return None
    kind = attribute.type
    if kind == "complex":
        return _coerce_complex(attribute, value, path, max_len, undeclared)
    if kind in ("string", "reference"):
        if not isinstance(value, str):
            raise InvalidValue(f"{path!r} must be a string, not {_json_type(value)}.")
        if len(value) > max_len:
            raise InvalidValue(f"{path!r} is longer than {max_len} characters.")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise InvalidValue(f"{path!r} must be a boolean, not {_json_type(value)}.")
        return value
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidValue(f"{path!r} must be an integer, not {_json_type(value)}.")
        return value
    if kind == "decimal":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise InvalidValue(f"{path!r} must be a number, not {_json_type(value)}.")
        return value
    if kind == "dateTime":
        if parse_datetime(value) is None:
            raise InvalidValue(f"{path!r} must be an xsd:dateTime such as 2011-05-13T04:42:34Z.")
        return value
    if kind == "binary":
        if not isinstance(value, str) or len(value) > MAX_BINARY_LENGTH:
            raise InvalidValue(f"{path!r} must be base64 text of at most {MAX_BINARY_LENGTH} characters.")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidValue(f"{path!r} is not valid base64.") from exc
        return value
    raise InvalidValue(f"{path!r} has the unsupported type {kind!r}.")  # pragma: no cover - schema bug


def _coerce_complex(attribute: Attribute, value: Any, path: str, max_len: int,
                    undeclared: Undeclared) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        raise InvalidValue(f"{path!r} must be an object of sub-attributes, not {_json_type(value)}.")
    if attribute is MEMBERS:
        return _coerce_member(value, path, max_len, undeclared)
    out: dict[str, Any] = {}
    for key, raw in value.items():
        sub = attribute.sub(key)
        if sub is None:
            undeclared(f"{_INDEX.sub('', path)}.{key}")
            continue
        if sub.mutability == "readOnly":
            continue
        coerced = coerce_value(sub, raw, f"{path}.{sub.name}", max_value_length=max_len, undeclared=undeclared)
        if coerced is None:
            continue
        if sub.name in out and out[sub.name] != coerced:
            raise InvalidSyntax(f"{path}.{sub.name} is given twice with different values.")
        out[sub.name] = coerced
    return out or None


def _coerce_member(value: dict[str, Any], path: str, max_len: int, undeclared: Undeclared) -> dict[str, Any]:
    for key in value:
        if key.lower() not in _MEMBER_KEYS:
            undeclared(f"{_INDEX.sub('', path)}.{key}")
    fields = {k.lower(): v for k, v in value.items() if isinstance(k, str)}
    member_id = fields.get("value")
    if not isinstance(member_id, str) or not member_id:
        raise InvalidValue(f"{path}.value must be the member's id, a non-empty string.")
    if len(member_id) > max_len:
        raise InvalidValue(f"{path}.value is longer than {max_len} characters.")
    out = {"value": member_id}
    kind = fields.get("type")
    if not is_unassigned(kind):
        if not isinstance(kind, str) or kind.lower() not in ("user", "group"):
            raise InvalidValue(f"{path}.type must be 'User' or 'Group'.")
        out["type"] = "User" if kind.lower() == "user" else "Group"
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


class _Staging:
    """Values collected per (schema URN, attribute), merged across the ways a body can name them."""

    def __init__(self, schema: ResourceSchema, max_len: int, undeclared: Undeclared) -> None:
        self.schema = schema
        self.max_len = max_len
        self.undeclared = undeclared
        self.values: dict[tuple[str, str], Any] = {}

    def coerce(self, attribute: Attribute, raw: Any, label: str) -> Any:
        return coerce_value(attribute, raw, label, max_value_length=self.max_len, undeclared=self.undeclared)

    def put(self, key: str, raw: Any) -> None:
        ref = entra.resolve_attribute(self.schema, key)
        if ref is None:
            for name in names_in(key, raw, self.schema.name):
                self.undeclared(name)
            return
        if ref.attribute.mutability == "readOnly":
            return
        attribute, slot = ref.attribute, (ref.schema, ref.attribute.name)
        label = ref.path
        if ref.sub is not None:
            if ref.sub.mutability == "readOnly":
                return
            if attribute.multi_valued:
                raise InvalidValue(f"{key!r}: {attribute.name} is multi-valued; send it as an array.")
            coerced = self.coerce(ref.sub, raw, label)
            if coerced is not None:
                self._merge(slot, {ref.sub.name: coerced}, label)
            return
        coerced = self.coerce(attribute, raw, label)
        if coerced is None:
            return
        if attribute.type == "complex" and not attribute.multi_valued:
            self._merge(slot, coerced, label)
        elif slot in self.values and self.values[slot] != coerced:
            raise InvalidSyntax(f"{label} is given twice with different values.")
        else:
            self.values[slot] = coerced

    def _merge(self, slot: tuple[str, str], value: dict[str, Any], label: str) -> None:
        # A new dict each time: the staged one may be a kept value, the caller's own object.
        current = dict(self.values.get(slot) or {})
        for sub, sub_value in value.items():
            if sub in current and current[sub] != sub_value:
                raise InvalidSyntax(f"{label}.{sub} is given twice with different values.")
            current[sub] = sub_value
        self.values[slot] = current

    def document(self) -> dict[str, Any]:
        core = self.schema.core
        doc: dict[str, Any] = {"schemas": [core.urn]}
        for attribute in (*COMMON_ATTRIBUTES, *core.attributes):
            if (core.urn, attribute.name) in self.values:
                doc[attribute.name] = self.values[(core.urn, attribute.name)]
        for ext in self.schema.extensions:
            values = {
                a.name: self.values[(ext.urn, a.name)]
                for a in ext.attributes
                if (ext.urn, a.name) in self.values
            }
            if values:
                doc["schemas"].append(ext.urn)
                doc[ext.urn] = values
        return doc


def validate_resource(
    body: Any, schema: ResourceSchema, *, max_value_length: int = MAX_VALUE_LENGTH,
    undeclared: Undeclared = silent,
) -> dict[str, Any]:
    """Check ``body`` as a ``schema`` resource and return a new, normalised document.

    Raises ``InvalidSyntax`` for a body that is not an object or a malformed ``schemas``,
    ``InvalidValue`` for a wrong type, an over-long value, several primaries or a missing
    required attribute. ``undeclared`` gets the name of every attribute the body carries
    that no schema of ``schema`` declares. See the module docstring for what is dropped and kept.
    """
    if not isinstance(body, dict):
        raise InvalidSyntax("The resource must be a JSON object.")
    body = entra.normalise_resource(body, schema)
    staging = _Staging(schema, max_value_length, undeclared)
    for key, raw in body.items():
        _stage(staging, key, raw)
    return _document(staging)


def _stage(staging: _Staging, key: Any, raw: Any, kept: dict[str, Any] | None = None) -> None:
    """One top-level key of a body. ``kept``: for a key naming an extension, the stored
    object of that extension (``validate_changes``), whose values are staged as they are."""
    if not isinstance(key, str):
        return
    if key.lower() == "schemas":
        if raw is not None and (not isinstance(raw, list) or not all(isinstance(s, str) for s in raw)):
            raise InvalidSyntax("schemas must be an array of URI strings.")
        return
    schema = staging.schema
    urn, rest = schema.split_urn(key)
    if urn is not None and not rest:
        if raw is None:
            return
        if not isinstance(raw, dict):
            raise InvalidSyntax(f"{urn} must be an object holding that schema's attributes.")
        names = schema.top_level(urn) if kept is not None else None
        for sub_key, sub_raw in raw.items():
            if not isinstance(sub_key, str):
                continue
            if names is not None and sub_raw is kept.get(sub_key, _ABSENT):  # type: ignore[union-attr]
                attribute = names.get(sub_key.lower())
                if _keep(staging, urn, attribute, sub_key, sub_raw):
                    continue
            staging.put(f"{urn}:{sub_key}", sub_raw)
        return
    staging.put(key, raw)


def _keep(staging: _Staging, urn: str, attribute: Attribute | None, key: str, value: Any) -> bool:
    """Stage a stored value as it is when ``put`` would give it back unchanged: its key is the
    attribute's canonical name (what ``validate_resource`` writes) and nothing is staged for it yet."""
    if attribute is None or attribute.name != key or attribute.mutability == "readOnly":
        return False
    slot = (urn, key)
    if slot in staging.values:
        return False
    staging.values[slot] = value
    return True


def _document(staging: _Staging) -> dict[str, Any]:
    doc = staging.document()
    for attribute in staging.schema.core.attributes:
        if attribute.required and attribute.name not in doc:
            raise InvalidValue(f"{attribute.name} is required and must not be empty.")
    return doc


def validate_changes(
    doc: dict[str, Any], base: dict[str, Any], schema: ResourceSchema, *,
    max_value_length: int = MAX_VALUE_LENGTH, undeclared: Undeclared = silent,
) -> dict[str, Any]:
    """``validate_resource(doc, schema)``, checking only the values ``doc`` does not share with ``base``.

    ``base`` is ``validate_resource`` output, and so its own result (the function is
    idempotent): a value of ``doc`` that is the very object ``base`` holds under the same
    key (the PATCH engine copies on write, so what no operation replaced is) would come
    out of ``put`` equal to itself, and is staged as it is. Every other value goes through
    the rules of ``validate_resource``, and the document is assembled and checked for its
    required attributes the same way, so the result and the errors are the same.
    """
    if not isinstance(doc, dict):
        raise InvalidSyntax("The resource must be a JSON object.")
    staging = _Staging(schema, max_value_length, undeclared)
    core = schema.core.urn
    names = schema.top_level()
    for key, raw in doc.items():
        # A key entra.normalise_resource renames is never one of a stored document's.
        if (raw is not base.get(key, _ABSENT) and isinstance(key, str) and ":" not in key
                and key.lower() not in names and entra.extension_for_unqualified(schema, key.partition(".")[0])):
            doc = entra.normalise_resource(doc, schema)
            break
    for key, raw in doc.items():
        if not isinstance(key, str):
            continue
        stored = base.get(key, _ABSENT)
        if raw is stored:
            if key == "schemas":
                continue  # valid as stored, and document() makes it anew
            if ":" not in key and _keep(staging, core, names.get(key.lower()), key, raw):
                continue
        _stage(staging, key, raw, kept=stored if isinstance(stored, dict) and ":" in key else None)
    return _document(staging)
