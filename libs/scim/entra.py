"""Microsoft Entra ID's SCIM dialect, rewritten to RFC form in one named place.

Each quirk is a small function naming its source (a P-number or section of
``/work/shared/entra-scim.md``). Entra sends two dialects — the default and the one behind
the ``aadOptscim062020`` flag (§8) — and both must be accepted, so every rewrite here is
idempotent and harmless for RFC-conforming clients.

Where each quirk is handled:

============================================  =================================================
Quirk                                         Handled by
============================================  =================================================
``"True"``/``"False"`` strings (§8 Disable)   ``string_boolean`` (via ``normalise_value``)
manager as a bare id string (P8, §9 sample)   ``manager_reference`` (via ``normalise_value``)
manager ``{"value": ""}`` = no manager (P9)   ``manager_reference``
manager as ``[{"$ref", "value"}]`` (§9 SDK)   ``manager_reference``
unqualified ``manager`` path/filter (P10)     ``resolve_attribute``, ``qualify_extension_path``
``Remove members`` + value array (P13)        ``remove_by_value_array``
capitalised ``Add``/``Replace``/``Remove``    ``libs.scim.patch.parse_patch_request`` (the op
                                              must be known before anything else is read)
path-less replace, dotted/URN keys (P5)       ``libs.scim.patch`` (generic: each key is a path)
type-filtered path creates the entry (P6)     ``libs.scim.patch`` (generic ``eq`` seeding)
capitalised sub-attributes (P7)               case-insensitive names (RFC 7643 §2.1)
``""`` then ``null`` clears (P16)             ``libs.scim.validate`` (unassigned = absent)
re-adding a member (P17)                      ``libs.scim.patch.MemberChanges`` (set semantics)
unknown ``schemas`` URIs (§8 ADSCIM)          ``libs.scim.validate`` (dropped)
============================================  =================================================

``libs.scim.validate.coerce_value`` calls ``normalise_value`` for every value it checks,
and ``libs.scim.patch.apply_patch`` calls ``normalise_patch_operations``, so callers get
Entra's dialect accepted without remembering to call this module.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from libs.scim.filter import AttrPath, Compare, PatchPath
from libs.scim.patch_operation import PatchOperation
from libs.scim.schemas import ENTERPRISE_ATTRIBUTES, AttrRef, Attribute, ResourceSchema

MANAGER: Attribute = next(a for a in ENTERPRISE_ATTRIBUTES if a.name == "manager")


def string_boolean(value: Any) -> Any:
    """``"True"``/``"False"`` (any case) → ``True``/``False``; anything else unchanged.

    Without ``aadOptscim062020`` Entra disables a user with ``"value": "False"``, a string
    (entra-scim.md §6, §8 "Disable user"); the reference server parses it case-insensitively.
    """
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def manager_reference(value: Any) -> Any:
    """The enterprise ``manager`` as ``{"value": id}``, or ``None`` for "no manager".

    - P8 and the tutorial's schema sample: a bare id string, ``"manager": "123456"``.
    - §9 SDK-era sample: ``Add`` ``manager`` with ``[{"$ref": …, "value": id}]`` (an array of one).
    - P9: ``{"value": ""}`` clears the manager; so do ``""`` and ``null``.
    """
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str):
        return {"value": value} if value else None
    if isinstance(value, dict):
        ids = [v for k, v in value.items() if isinstance(k, str) and k.lower() == "value"]
        if not ids or ids[0] is None or ids[0] == "":
            return None
    return value


def normalise_value(attribute: Attribute, value: Any) -> Any:
    """Apply the value-level quirks that concern ``attribute``; other values pass unchanged."""
    if attribute.type == "boolean":
        return string_boolean(value)
    if attribute is MANAGER:
        return manager_reference(value)
    return value


def extension_for_unqualified(schema: ResourceSchema, name: str) -> str | None:
    """The URN of the only extension defining ``name`` when the core schema does not.

    P10: Entra removes a manager with ``manager[value eq "<id>"]`` and checks references with
    ``manager eq "<id>"`` (§3), both without the enterprise URN that RFC 7644 §3.10 asks for.
    """
    lowered = name.lower()
    if lowered in schema.top_level():
        return None
    found = [ext.urn for ext in schema.extensions if any(a.name.lower() == lowered for a in ext.attributes)]
    return found[0] if len(found) == 1 else None


def resolve_attribute(schema: ResourceSchema, text: str) -> AttrRef | None:
    """``schema.resolve(text)``, falling back to an unqualified extension name (P10)."""
    ref = schema.resolve(text)
    if ref is not None:
        return ref
    urn, rest = schema.split_urn(text)
    if urn is not None or not rest:
        return None
    ext = extension_for_unqualified(schema, rest.partition(".")[0])
    return schema.resolve(f"{ext}:{rest}") if ext else None


def normalise_resource(body: dict[str, Any], schema: ResourceSchema) -> dict[str, Any]:
    """Resource-level quirks: unqualified extension attributes get their URN (P10, §9 sample).

    Returns a new top-level dict; nested values are shared, never modified.
    """
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(key, str) and ":" not in key:
            ext = extension_for_unqualified(schema, key.partition(".")[0])
            if ext is not None:
                key = f"{ext}:{key}"
        out[key] = value
    return out


def qualify_extension_path(op: PatchOperation, schema: ResourceSchema) -> PatchOperation:
    """P10: give an unqualified extension path (``manager[value eq "x"]``) its URN.

    Keys of a path-less value object get the same treatment.
    """
    if op.path is not None and op.path.attr.uri is None:
        ext = extension_for_unqualified(schema, op.path.attr.name)
        if ext is not None:
            attr = dataclasses.replace(op.path.attr, uri=ext)
            return dataclasses.replace(op, path=dataclasses.replace(op.path, attr=attr))
    if op.path is None and isinstance(op.value, dict):
        value = normalise_resource(op.value, schema)
        if list(value) != list(op.value):
            return dataclasses.replace(op, value=value)
    return op


def remove_by_value_array(op: PatchOperation, schema: ResourceSchema) -> list[PatchOperation]:
    """P13: ``Remove`` ``members`` + ``value: [{"value": id}, …]`` → ``remove members[value eq id]`` each.

    Sent without ``aadOptscim062020`` (§8 "Remove group member"), still seen in 2025. RFC
    7644 §3.5.2.2 gives ``remove`` no value, so a literal reading would remove *every*
    member. Any multi-valued complex attribute is treated alike; an empty array removes
    nothing. A value that is not such an array is left for the engine to reject.
    """
    if op.op != "remove" or op.path is None or op.path.filter is not None or op.path.sub is not None:
        return [op]
    if not isinstance(op.value, list):
        return [op]
    ref = resolve_attribute(schema, op.path.attr.text)
    if (
        ref is None
        or ref.sub is not None
        or not ref.attribute.multi_valued
        or ref.attribute.type != "complex"
    ):
        return [op]
    ids = []
    for item in op.value:
        found = (
            [v for k, v in item.items() if isinstance(k, str) and k.lower() == "value"]
            if isinstance(item, dict)
            else []
        )
        if not found or not isinstance(found[0], str) or not found[0]:
            return [op]
        ids.append(found[0])
    base = op.path_text or op.path.attr.text
    return [
        dataclasses.replace(
            op,
            value=None,
            path=PatchPath(op.path.attr, Compare(AttrPath(None, "value"), "eq", i)),
            path_text=f"{base}[value eq {json.dumps(i)}]",
        )
        for i in ids
    ]


def normalise_patch_operations(ops: Sequence[PatchOperation], schema: ResourceSchema) -> list[PatchOperation]:
    """Rewrite Entra's operation-level quirks (P10, P13) to RFC 7644 form; idempotent."""
    out: list[PatchOperation] = []
    for op in ops:
        out.extend(remove_by_value_array(qualify_extension_path(op, schema), schema))
    return out
