"""Flatten a SCIM document into ``resource_values`` rows (the value index filters run on).

One row per leaf value: ``path`` is the canonical lower-cased dotted path
(``emails.value``, ``name.givenname``, ``urn:…:enterprise:2.0:user:manager.value``),
``ordinal`` the element's index in a multi-valued attribute (0 for a singular one), so
the sub-attributes of one element share an ordinal and ``emails[type eq "work" and value
eq "x"]`` can be matched element-wise (``libs.store.query``).

Encoding of a value (the query side relies on exactly this, see ``encode``):

- strings, references: ``str_value`` as sent, ``ci_value = fold(str_value)``, ``ci_key``
  its first ``KEY_PREFIX`` characters (the indexed column); ``num_value`` NULL.
- booleans: ``str_value``/``ci_value`` ``"true"``/``"false"``, ``num_value`` 1.0/0.0.
  Entra's string booleans (``"True"``) are accepted.
- integers/decimals: ``num_value``; ``str_value`` its JSON text.
- dateTimes: ``str_value`` as sent, ``num_value`` the POSIX timestamp (UTC assumed when the
  text has no offset) so instants compare correctly whatever their offset; NULL if unparseable.

Not indexed here: ``id``, ``meta``, ``schemas``, ``externalId`` and the resource's name
(User ``userName`` / Group ``displayName``) — they live in ``resources`` columns —, ``members``
and ``groups`` (the ``group_members`` table), writeOnly attributes (``password``), binary
values, unassigned values (null, ``""``, ``[]``, ``{}``: RFC 7643 §2.5) and unknown attributes. A User's ``displayName`` *is* indexed here (its column
is not case-folded, and SQLite's ``lower()`` folds ASCII only).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from libs.scim import validate
from libs.scim.schemas import COMMON_ATTRIBUTES, GROUPS, AttrRef, Attribute, ResourceSchema
from libs.store.tables import KEY_PREFIX

_SKIP_TOP = frozenset({"id", "meta", "schemas", "externalid", "members", "groups"})


def fold(text: str) -> str:
    """The case folding of ``ci_value``/``name_key``; query values are folded the same way."""
    return text.lower()


def column_name_attribute(schema: ResourceSchema) -> str:
    """The attribute held in ``resources.name``/``name_key``: Group ``displayname``, else ``username``."""
    return "displayname" if schema.name == GROUPS.name else "username"


def parse_datetime(text: Any) -> datetime | None:
    """xsd:dateTime → aware UTC datetime (no zone = UTC), as the validator reads it; None if invalid."""
    value = validate.parse_datetime(text)
    return value.astimezone(timezone.utc) if value is not None else None


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def encode(attribute: Attribute, value: Any) -> dict[str, Any] | None:
    """The ``str_value``/``ci_value``/``ci_key``/``num_value`` of one leaf value; None to skip it."""
    kind = attribute.type
    if validate.is_unassigned(value) or kind in ("binary", "complex") or attribute.mutability == "writeOnly":
        return None
    if kind == "boolean":
        flag = as_bool(value)
        if flag is None:
            return None
        text = "true" if flag else "false"
        return {"str_value": text, "ci_value": text, "ci_key": text, "num_value": 1.0 if flag else 0.0}
    if kind in ("integer", "decimal"):
        number = as_number(value)
        if number is None:
            return None
        text = json.dumps(value) if isinstance(value, (int, float)) else value.strip()
        return {"str_value": text, "ci_value": text.lower(), "ci_key": text.lower()[:KEY_PREFIX],
                "num_value": number}
    if isinstance(value, (dict, list)):
        return None
    text = value if isinstance(value, str) else json.dumps(value)
    folded = fold(text)
    number = None
    if kind == "dateTime":
        moment = parse_datetime(text)
        number = moment.timestamp() if moment is not None else None
    return {"str_value": text, "ci_value": folded, "ci_key": folded[:KEY_PREFIX], "num_value": number}


_paths: dict[tuple[str, str, str | None], str] = {}
# Names AttrRef.path compares whole Attribute definitions for (COMMON_ATTRIBUTES): not cached.
_COMMON_NAMES = frozenset(a.name for a in COMMON_ATTRIBUTES)


def _path(schema_urn: str, attribute: Attribute, sub: Attribute | None) -> str:
    """``AttrRef(...).path.lower()``, remembered: an extension attribute's path compared its
    definition with each of COMMON_ATTRIBUTES' (dataclass equality) for every row made."""
    key = (schema_urn, attribute.name, sub.name if sub is not None else None)
    path = _paths.get(key)
    if path is None:
        path = AttrRef(schema_urn, attribute, sub).path.lower()
        if attribute.name not in _COMMON_NAMES:
            _paths[key] = path
    return path


def _leaf_rows(out: list[dict], schema_urn: str, attribute: Attribute, sub: Attribute | None, value: Any,
               ordinal: int) -> None:
    encoded = encode(sub or attribute, value)
    if encoded is not None:
        out.append({"path": _path(schema_urn, attribute, sub), "ordinal": ordinal, **encoded})


def _complex_rows(out: list[dict], schema_urn: str, attribute: Attribute, value: Any, ordinal: int) -> None:
    if isinstance(value, dict):
        for key, sub_value in value.items():
            sub = attribute.sub(key) if isinstance(key, str) else None
            if sub is not None:
                _leaf_rows(out, schema_urn, attribute, sub, sub_value, ordinal)
    elif isinstance(value, (str, int, float)) and not isinstance(value, bool) and attribute.sub("value"):
        # Entra's sloppy forms: a bare manager id, a bare email string.
        _leaf_rows(out, schema_urn, attribute, attribute.sub("value"), value, ordinal)


def _attribute_rows(out: list[dict], schema_urn: str, attribute: Attribute, value: Any) -> None:
    if validate.is_unassigned(value) or attribute.mutability == "writeOnly" or attribute.type == "binary":
        return
    if attribute.multi_valued:
        elements = value if isinstance(value, list) else [value]
        for ordinal, element in enumerate(elements):
            if attribute.type == "complex":
                _complex_rows(out, schema_urn, attribute, element, ordinal)
            else:
                _leaf_rows(out, schema_urn, attribute, None, element, ordinal)
    elif attribute.type == "complex":
        _complex_rows(out, schema_urn, attribute, value, 0)
    else:
        _leaf_rows(out, schema_urn, attribute, None, value, 0)


def flatten(doc: dict[str, Any], schema: ResourceSchema) -> list[dict[str, Any]]:
    """The ``resource_values`` rows of ``doc`` (without ``resource_pk``), in document order."""
    out: list[dict[str, Any]] = []
    skip = _SKIP_TOP | {column_name_attribute(schema)}
    if schema.name != GROUPS.name:
        skip = skip | {"active"}
    core = schema.top_level()
    for key, value in doc.items():
        if not isinstance(key, str):
            continue
        extension = schema.extension(key) if key.lower().startswith("urn:") else None
        if extension is not None:
            if isinstance(value, dict):
                ext_attrs = schema.top_level(extension.urn)
                for ext_key, ext_value in value.items():
                    attribute = ext_attrs.get(ext_key.lower()) if isinstance(ext_key, str) else None
                    if attribute is not None:
                        _attribute_rows(out, extension.urn, attribute, ext_value)
            continue
        lowered = key.lower()
        if lowered in skip:
            continue
        attribute = core.get(lowered)
        if attribute is not None:
            _attribute_rows(out, schema.core.urn, attribute, value)
    return out
