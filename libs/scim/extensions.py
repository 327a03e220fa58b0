"""Extension schemas an administrator declares in the config file (RFC 7643 §3.3).

The ``[[schemas]]`` tables of the TOML config file (see README, "Custom extension
schemas") become ``SchemaDoc``s attached to the User or Group resource type, so
validation, PATCH paths, the filter translator, the value index, ``/Schemas`` and
``/ResourceTypes`` all see them through the one ``ResourceSchema``. ``install`` extends the
module-level ``USERS``/``GROUPS`` in place, once per process at start, so every
``from libs.scim.schemas import USERS`` (and ``schema is USERS``) keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from libs.scim import schemas
from libs.scim.schemas import Attribute, ResourceSchema, SchemaDoc

TYPES = ("string", "boolean", "decimal", "integer", "dateTime", "reference", "binary", "complex")
MUTABILITY = ("readOnly", "readWrite", "immutable", "writeOnly")
RETURNED = ("always", "never", "default", "request")
UNIQUENESS = ("none", "server", "global")
_URN = re.compile(r"urn:[A-Za-z0-9][A-Za-z0-9-]{0,31}:[A-Za-z0-9()+,\-.:=@;$_!*'%/?#]+")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ATTRIBUTE_KEYS = {"name", "type", "multi_valued", "required", "case_exact", "mutability", "returned",
                   "uniqueness", "description", "canonical_values", "reference_types", "sub_attributes"}


def _default_name(urn: str) -> str:
    """``urn:…:extension:acme:2.0:User`` → ``AcmeUser`` (the RFC's ``EnterpriseUser`` pattern)."""
    parts = urn.split(":")
    lowered = [p.lower() for p in parts]
    if "extension" in lowered and lowered.index("extension") + 1 < len(parts) - 1:
        vendor = parts[lowered.index("extension") + 1]
        return vendor[:1].upper() + vendor[1:] + parts[-1]
    return parts[-1]


_BUILT_IN = {name: r.extensions for name, r in schemas.RESOURCE_TYPES.items()}


class SchemaConfigError(ValueError):
    """A ``[[schemas]]`` table the service cannot serve; the message names it."""


def parse_attribute(raw: Any, where: str, *, nested: bool = False) -> Attribute:
    if not isinstance(raw, Mapping):
        raise SchemaConfigError(f"{where}: an attribute must be a table")
    unknown = set(raw) - _ATTRIBUTE_KEYS
    if unknown:
        raise SchemaConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SchemaConfigError(f"{where}: name must be an attribute name such as badgeNumber")
    where = f"{where}.{name}"
    kind = raw.get("type", "string")
    for key, value, allowed in (("type", kind, TYPES), ("mutability", raw.get("mutability", "readWrite"), MUTABILITY),
                                ("returned", raw.get("returned", "default"), RETURNED),
                                ("uniqueness", raw.get("uniqueness", "none"), UNIQUENESS)):
        if value not in allowed:
            raise SchemaConfigError(f"{where}: {key} must be one of {', '.join(allowed)}")
    if raw.get("mutability") == "writeOnly" and raw.get("returned", "never") != "never":
        raise SchemaConfigError(f"{where}: a writeOnly attribute is returned never (RFC 7643 §2.2)")
    for key in ("multi_valued", "required", "case_exact"):
        if not isinstance(raw.get(key, False), bool):
            raise SchemaConfigError(f"{where}: {key} must be true or false")
    if raw.get("uniqueness", "none") != "none":
        raise SchemaConfigError(f"{where}: uniqueness of extension attributes is not enforced; use 'none'")
    subs = raw.get("sub_attributes", [])
    if kind == "complex":
        if nested:
            raise SchemaConfigError(f"{where}: a sub-attribute cannot be complex (RFC 7643 §2.3.8)")
        if not subs:
            raise SchemaConfigError(f"{where}: a complex attribute needs sub_attributes")
    elif subs:
        raise SchemaConfigError(f"{where}: only complex attributes have sub_attributes")
    return Attribute(
        name=name, type=kind, multi_valued=raw.get("multi_valued", False), required=raw.get("required", False),
        case_exact=raw.get("case_exact", False), mutability=raw.get("mutability", "readWrite"),
        returned=raw.get("returned", "never" if raw.get("mutability") == "writeOnly" else "default"),
        uniqueness="none", description=str(raw.get("description", "")),
        canonical_values=tuple(str(v) for v in raw.get("canonical_values", [])),
        reference_types=tuple(str(v) for v in raw.get("reference_types", [])),
        sub_attributes=tuple(parse_attribute(s, where, nested=True) for s in subs),
    )


def parse_schemas(tables: Any) -> dict[str, list[SchemaDoc]]:
    """``file["schemas"]`` → {resource type name: [extension SchemaDoc, …]}."""
    out: dict[str, list[SchemaDoc]] = {name: [] for name in schemas.RESOURCE_TYPES}
    if tables is None:
        return out
    if not isinstance(tables, list):
        raise SchemaConfigError("schemas must be an array of tables: [[schemas]]")
    taken = {doc.urn.lower() for name, r in schemas.RESOURCE_TYPES.items() for doc in (r.core, *_BUILT_IN[name])}
    for index, table in enumerate(tables):
        where = f"[[schemas]] #{index + 1}"
        if not isinstance(table, Mapping):
            raise SchemaConfigError(f"{where}: must be a table")
        urn = table.get("id")
        if not isinstance(urn, str) or not _URN.fullmatch(urn):
            raise SchemaConfigError(f"{where}: id must be a schema URN such as "
                                    "urn:ietf:params:scim:schemas:extension:acme:2.0:User")
        where = f"[[schemas]] {urn}"
        if urn.lower() in taken:
            raise SchemaConfigError(f"{where}: the schema is declared twice or is a built-in one")
        taken.add(urn.lower())
        resource_type = table.get("resource_type")
        if resource_type not in out:
            raise SchemaConfigError(f"{where}: resource_type must be one of {', '.join(out)}")
        raw_attributes = table.get("attributes") or []
        if not isinstance(raw_attributes, list) or not raw_attributes:
            raise SchemaConfigError(f"{where}: needs at least one [[schemas.attributes]]")
        attributes = tuple(parse_attribute(a, where) for a in raw_attributes)
        names = [a.name.lower() for a in attributes]
        if len(set(names)) != len(names):
            raise SchemaConfigError(f"{where}: two attributes share a name")
        name = table.get("name") or _default_name(urn)
        out[resource_type].append(SchemaDoc(urn, str(name), str(table.get("description", name)), attributes))
    return out


def install(file: Mapping[str, Any]) -> None:
    """Attach the configured extensions to ``USERS``/``GROUPS`` (idempotent; raises on a bad table)."""
    declared = parse_schemas(file.get("schemas"))
    for name, resource in schemas.RESOURCE_TYPES.items():
        _set_extensions(resource, (*_BUILT_IN[name], *declared[name]))


def _set_extensions(resource: ResourceSchema, extensions: tuple[SchemaDoc, ...]) -> None:
    if resource.extensions == extensions:
        return
    object.__setattr__(resource, "extensions", extensions)
    for cached in ("_by_urn", "_core_names", "_urns_longest_first", "_extension_names", "never_returned", "_resolved"):
        resource.__dict__.pop(cached, None)


def all_schemas() -> list[SchemaDoc]:
    """Every schema /Schemas publishes, built-in and configured."""
    out: list[SchemaDoc] = []
    for resource in schemas.RESOURCE_TYPES.values():
        for doc in (resource.core, *resource.extensions):
            if doc not in out:
                out.append(doc)
    return out
