"""Resource → response document: ``meta``, ``location`` and attribute selection (RFC 7644 §3.9).

``attributes`` keeps only the named attributes plus those ``returned: always`` (``id``,
``schemas``); ``excludedAttributes`` drops the named ones except those. Names resolve
case-insensitively through the resource schema, so ``excludedAttributes=MEMBERS`` works.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from libs.scim.errors import InvalidValue
from libs.scim.schemas import LIST_RESPONSE, ResourceSchema

ALWAYS = frozenset({"id", "schemas"})


def format_datetime(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def etag(version: int) -> str:
    return f'W/"{version}"'


_ENTITY_TAG = re.compile(r'(?:W/)?"([^"]*)"')


def not_modified(if_none_match: str, current: str) -> bool:
    """Whether a GET's ``If-None-Match`` names the ``current`` ETag (RFC 9110 §13.1.2): ``*``
    names any, and entity-tags compare weakly, so ``"3"`` and ``W/"3"`` both name ``W/"3"``."""
    if if_none_match.strip() == "*":
        return True
    wanted = _ENTITY_TAG.fullmatch(current)
    return wanted is not None and wanted.group(1) in _ENTITY_TAG.findall(if_none_match)


def with_location(doc: dict[str, Any], base_url: str, schema: ResourceSchema) -> dict[str, Any]:
    """The document as a client may see it: ``meta.location``, ``$ref`` of members and groups,
    and no attribute that is ``returned: never`` (a stored password hash stays in the store)."""
    meta = doc.get("meta")
    if isinstance(meta, dict) and "id" in doc:
        meta["location"] = f"{base_url}/{schema.endpoint}/{doc['id']}"
    for name in schema.never_returned:
        doc.pop(name, None)
    for ext in schema.extensions:
        hidden = {a.name for a in ext.attributes if a.returned == "never"}
        if hidden and isinstance(doc.get(ext.urn), dict):
            doc[ext.urn] = {k: v for k, v in doc[ext.urn].items() if k not in hidden}
    for key in ("members", "groups"):
        for ref in doc.get(key) or ():
            if isinstance(ref, dict) and "value" in ref:
                endpoint = "Users" if ref.get("type") == "User" else "Groups"
                ref["$ref"] = f"{base_url}/{endpoint}/{ref['value']}"
    return doc


def parse_attribute_list(raw: str | None, schema: ResourceSchema) -> list[tuple[str, str | None]]:
    """``"userName,name.givenName"`` → [(top-level key, sub-attribute or None)] in canonical case."""
    if not raw:
        return []
    out: list[tuple[str, str | None]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        ref = schema.resolve(item)
        if ref is None:
            urn, rest = schema.split_urn(item)
            if urn and not rest:  # a whole extension
                out.append((urn, None))
                continue
            raise InvalidValue(f"Unknown attribute {item[:200]!r} in attributes/excludedAttributes.")
        if ref.schema in schema.schema_urns[1:]:
            out.append((ref.schema, ref.attribute.name + ("." + ref.sub.name if ref.sub else "")))
        else:
            out.append((ref.attribute.name, ref.sub.name if ref.sub else None))
    return out


def _ci_get(d: dict[str, Any], key: str) -> str | None:
    for k in d:
        if k.lower() == key.lower():
            return k
    return None


def project(doc: dict[str, Any], attributes: list[tuple[str, str | None]],
            excluded: list[tuple[str, str | None]]) -> dict[str, Any]:
    """Apply attributes/excludedAttributes to a full document (returns a new dict).

    Sub-attributes that are ``returned: request`` (``members.display``) appear only when
    ``attributes`` names them."""
    if not attributes:
        doc = _drop_request_only(doc)
    if attributes:
        out: dict[str, Any] = {k: v for k, v in doc.items() if k in ALWAYS}
        for key, sub in attributes:
            real = _ci_get(doc, key)
            if real is None:
                continue
            if sub is None:
                out[real] = doc[real]
            elif key.startswith("urn:"):
                ext = doc[real]
                name, _, subsub = sub.partition(".")
                rk = _ci_get(ext, name)
                if rk is None:
                    continue
                target = out.setdefault(real, {})
                if subsub and isinstance(ext[rk], dict):
                    sk = _ci_get(ext[rk], subsub)
                    if sk is not None:
                        target.setdefault(rk, {})[sk] = ext[rk][sk]
                else:
                    target[rk] = ext[rk]
            else:
                value = doc[real]
                if isinstance(value, dict):
                    sk = _ci_get(value, sub)
                    if sk is not None:
                        out.setdefault(real, {})[sk] = value[sk]
                elif isinstance(value, list):
                    picked = [{sk: e[sk]} for e in value if isinstance(e, dict) and (sk := _ci_get(e, sub))]
                    if picked:
                        out[real] = picked
        return out
    if excluded:
        out = dict(doc)
        for key, sub in excluded:
            real = _ci_get(out, key)
            if real is None or real in ALWAYS:
                continue
            if sub is None:
                del out[real]
            elif key.startswith("urn:"):
                ext = dict(out[real])
                name = sub.partition(".")[0]
                rk = _ci_get(ext, name)
                if rk is not None:
                    del ext[rk]
                out[real] = ext
            elif isinstance(out[real], dict):
                value = dict(out[real])
                sk = _ci_get(value, sub)
                if sk is not None:
                    del value[sk]
                out[real] = value
            elif isinstance(out[real], list):
                out[real] = [{k: v for k, v in e.items() if k.lower() != sub.lower()} for e in out[real]]
        return out
    return doc


def _drop_request_only(doc: dict[str, Any]) -> dict[str, Any]:
    members = doc.get("members")
    if not members:
        return doc
    out = dict(doc)
    out["members"] = [{k: v for k, v in m.items() if k != "display"} for m in members]
    return out


def list_response(resources: list[dict[str, Any]], total: int, start_index: int) -> dict[str, Any]:
    return {
        "schemas": [LIST_RESPONSE],
        "totalResults": total,
        "Resources": resources,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
    }
