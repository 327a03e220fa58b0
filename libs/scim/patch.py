"""The PATCH engine (RFC 7644 §3.5.2): parse a PatchOp body, apply it to a resource.

Pipeline: ``ops = parse_patch_request(body)`` (the front, to answer 400s early), then
``apply_patch(resource, ops, schema)`` (the worker, on the stored document). ``apply_patch``
runs ``libs.scim.entra.normalise_patch_operations`` itself, so Entra's dialect (both
columns of entra-scim.md §8) is accepted either way.

Semantic choices (RFC text where it speaks, Entra's expectations where it is silent):

- ``op`` is matched case-insensitively (Entra sends ``Add``/``Replace``/``Remove``, §5);
  ``Operations``/``op``/``path``/``value`` keys too. A body without ``schemas`` is
  accepted; a ``schemas`` without the PatchOp URN is ``InvalidSyntax``. More than
  ``max_operations`` operations is ``PayloadTooLarge`` (413, as for bulk maxOperations,
  RFC 7644 §3.7.3). ``add``/``replace`` without ``value`` is ``InvalidValue``; ``remove``
  without ``path`` is ``NoTarget`` (§3.5.2.2).
- An attribute no schema declares is handed to the ``undeclared`` callback wherever it
  appears, exactly as ``libs.scim.validate`` does for a resource body
  (``libs.scim.undeclared``: ``SCIM_UNKNOWN_ATTRIBUTES`` ignores or rejects it): a path
  naming one (``costCenter``, ``name.nickname``, ``urn:…:Contoso:2.0:User:costCenter``,
  ``emails[type eq "work"].colour``, or a value filter naming an undeclared sub-attribute,
  ``emails[colour eq "red"]``), a key of a path-less value, a sub-attribute inside a
  value. An ignored path makes its operation a no-op (what it selects or sets is nothing we
  keep); a rejected one is ``InvalidPath``. The default drops them silently.
- A path naming a readOnly attribute or sub-attribute (``id``, ``meta``, ``groups``,
  ``manager.displayName``) is ``Mutability``. In a *path-less* value object, ``schemas``
  and readOnly attributes are ignored, as in a resource body: clients echo what they read.
- A path that does not parse is ``InvalidPath``, and so is one whose shape its attribute
  cannot take (the core schema URN, a value filter on a simple attribute); a value filter
  with an unsupported comparison is ``InvalidFilter`` (RFC 7644 Table 9 lists
  invalidFilter for PATCH path filters).
- Path-less value keys are paths themselves: ``name.givenName``,
  ``urn:…:enterprise:2.0:User:employeeNumber`` and ``emails[type eq "work"].value`` all work
  (Entra P5); a bare extension URN key holds an object of that extension's attributes.
- ``add`` appends to a multi-valued attribute, skipping values already present (§3.5.2.1);
  a single object is accepted as an array of one. ``add``/``replace`` on a single complex
  attribute merge sub-attributes (sub-attributes not given are left unchanged, §3.5.2.3).
- A value that is unassigned (``null``, ``""``, ``[]``) given to ``add``/``replace`` clears
  the target (Entra P16, and P9's ``{"value": ""}`` manager); ``add`` of ``[]`` is a no-op.
- ``remove`` of an attribute that has no value, and ``remove`` with a filter matching
  nothing, succeed without change: the end state the client asked for holds, and Entra
  re-sends failed requests for days (§4), so a 400 would only quarantine the job.
- ``add``/``replace`` with a value filter matching nothing: when the filter is an ``eq``
  (or an ``and`` of ``eq``s) on sub-attributes, the element is created with those values
  (Entra P6: ``phoneNumbers[type eq "mobile"].value``); otherwise ``NoTarget`` (§3.5.2.3).
  ``replace`` of whole matched elements keeps the filter's ``eq`` values when the new
  value omits them. A filter on a single complex attribute treats it as a list of one
  (Entra P10: ``manager[value eq "id"]``).
- Setting ``primary: true`` on one element sets it to false on the others (§3.5.2).
- Removing a required attribute, or clearing it, is ``Mutability`` (§3.5.2.2).
- Group members never enter the document: member operations become ``MemberChanges``
  (see there); only ``members[value eq "id"]`` filters (or an ``or`` of them) are resolved
  without ``load_members``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from libs.scim import entra
from libs.scim.errors import (
    InvalidFilter,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    Mutability,
    NoTarget,
    PayloadTooLarge,
)
from libs.scim.evaluate import matches
from libs.scim.filter import And, Compare, Filter, Not, Or, PatchPath, Present, parse_patch_path
from libs.scim.patch_operation import PatchOperation
from libs.scim.schemas import PATCH_OP, AttrRef, Attribute, ResourceSchema
from libs.scim.undeclared import Undeclared, UndeclaredPath, names_in, silent
from libs.scim.validate import (
    MAX_VALUE_LENGTH,
    MEMBERS,
    coerce_value,
    is_unassigned,
    validate_changes,
    validate_resource,
)

MAX_OPERATIONS = 1000
"""Default cap on the operations of one PATCH request."""

OPS = ("add", "replace", "remove")
_PASSTHROUGH = ("id", "meta")


@dataclass
class MemberChanges:
    """Group membership changes, to apply in this order: ``remove_all``, ``remove``, ``add``.

    Operations are folded as they come, so the order above gives the same result as
    replaying them: removing an id drops it from ``add``, adding one drops it from
    ``remove``, and ``remove_all`` empties both. ``add`` holds ``{"value": id, "type"?: …}``
    (one entry per id, last type wins); re-adding a current member is allowed (P17), so the
    store applies ``add`` with set semantics.
    """

    add: list[dict[str, str]] = field(default_factory=list)
    remove: set[str] = field(default_factory=set)
    remove_all: bool = False

    @property
    def is_empty(self) -> bool:
        return not (self.add or self.remove or self.remove_all)


@dataclass(frozen=True)
class PatchResult:
    """The patched document, whether it changed, and the group member changes.

    ``changed`` is True exactly when ``resource`` differs from the (normalised) input
    document: no version bump otherwise. Member changes are not part of it: ``members``
    is None when no operation touched members, else the changes to apply, and only the
    store knows whether they change anything (re-adding a member, P17, does not).
    """

    resource: dict[str, Any]
    changed: bool
    members: MemberChanges | None = None


def _fold(obj: dict[str, Any]) -> dict[str, Any]:
    return {k.lower(): v for k, v in obj.items() if isinstance(k, str)}


def parse_patch_request(body: Any, *, max_operations: int = MAX_OPERATIONS) -> list[PatchOperation]:
    """Check a PatchOp body (RFC 7644 §3.5.2) and return its operations, paths parsed."""
    if not isinstance(body, dict):
        raise InvalidSyntax("A PATCH body must be a JSON object.")
    fields = _fold(body)
    schemas = fields.get("schemas")
    if schemas is not None and (
        not isinstance(schemas, list)
        or not any(isinstance(s, str) and s.lower() == PATCH_OP.lower() for s in schemas)
    ):
        raise InvalidSyntax(f"A PATCH body's schemas must be [{PATCH_OP!r}].")
    ops = fields.get("operations")
    if not isinstance(ops, list) or not ops:
        raise InvalidSyntax("A PATCH body needs Operations, a non-empty array.")
    if len(ops) > max_operations:
        raise PayloadTooLarge(f"A PATCH request may hold at most {max_operations} operations.")
    return [_parse_operation(raw, index) for index, raw in enumerate(ops)]


def _parse_operation(raw: Any, index: int) -> PatchOperation:
    where = f"Operations[{index}]"
    if not isinstance(raw, dict):
        raise InvalidSyntax(f"{where} must be an object.")
    fields = _fold(raw)
    op = fields.get("op")
    if not isinstance(op, str) or op.lower() not in OPS:
        raise InvalidSyntax(f"{where}.op must be add, replace or remove, not {str(op)[:50]!r}.")
    op = op.lower()
    path_text = fields.get("path")
    path = None
    if path_text is not None:
        if not isinstance(path_text, str):
            raise InvalidPath(f"{where}.path must be a string.")
        path = parse_patch_path(path_text)
    if path is None and op == "remove":
        raise NoTarget(f"{where}: remove needs a path (RFC 7644 §3.5.2.2).")
    if op != "remove":
        if "value" not in fields:
            raise InvalidValue(f"{where}: {op} needs a value.")
        if path is None and not isinstance(fields["value"], dict):
            raise InvalidValue(f"{where}: {op} without a path needs an object of attributes as its value.")
    return PatchOperation(op, path, fields.get("value"), path_text)


def apply_patch(
    resource: dict[str, Any],
    operations: Sequence[PatchOperation],
    schema: ResourceSchema,
    *,
    load_members: Callable[[], list[dict[str, Any]]] | None = None,
    max_value_length: int = MAX_VALUE_LENGTH,
    undeclared: Undeclared = silent,
    validated: bool = False,
) -> PatchResult:
    """Apply ``operations`` to a copy of ``resource`` (never modified) and re-validate it.

    The copy is made on write: the engine copies the top-level dict, and an extension's
    object, an element list or an element only when an operation changes it, so the
    result shares every value no operation touched with ``resource`` (callers must not
    modify either in place).

    ``resource`` is a stored document (``validate_resource`` output, Groups without
    ``members``); its ``id`` and ``meta``, if present, are passed through untouched.
    ``load_members`` returns the group's current members (``{"value", "type"?, "display"?}``)
    and is called at most once, only for a member filter other than ``value eq``.
    ``undeclared`` gets every attribute name no schema declares (see the module docstring).
    ``validated``: ``resource`` is ``validate_resource``'s output as stored (the worker's
    case), so it is not validated again: that was half of the validation a PATCH cost.
    """
    kept = {k: copy.deepcopy(v) for k, v in resource.items() if k in _PASSTHROUGH}
    base = {k: v for k, v in resource.items() if k not in _PASSTHROUGH}
    if not validated:
        base = validate_resource(base, schema, max_value_length=max_value_length)
    engine = _Engine(base, schema, load_members, max_value_length, undeclared)
    for op in entra.normalise_patch_operations(operations, schema):
        engine.apply(op)
    for attribute in schema.core.attributes:
        if attribute.required and attribute.name in base and is_unassigned(engine.doc.get(attribute.name)):
            raise Mutability(f"{attribute.name} is required and cannot be removed (RFC 7644 §3.5.2.2).")
    if validated:
        # Copy-on-write leaves every value no operation replaced the very object of ``base``,
        # valid as stored: only the replaced ones are checked (re-validating the whole
        # document was over half of apply_patch's CPU). The unvalidated path keeps the full check, the
        # reference the tests compare this one with.
        result = validate_changes(engine.doc, base, schema, max_value_length=max_value_length)
    else:
        result = validate_resource(engine.doc, schema, max_value_length=max_value_length)
    members = engine.member_changes()
    return PatchResult({**kept, **result}, result != base, members)


class _MemberLog:
    def __init__(self) -> None:
        self.adds: dict[str, dict[str, str]] = {}
        self.remove: set[str] = set()
        self.remove_all = False

    def add(self, members: list[dict[str, str]]) -> None:
        for member in members:
            self.remove.discard(member["value"])
            self.adds.pop(member["value"], None)
            self.adds[member["value"]] = member

    def drop(self, ids: set[str]) -> None:
        for member_id in ids:
            self.adds.pop(member_id, None)
            if not self.remove_all:
                self.remove.add(member_id)

    def clear(self) -> None:
        self.adds.clear()
        self.remove.clear()
        self.remove_all = True


def _filter_names(node: Filter) -> list[str]:
    """The plain names a value filter compares (``type`` in ``emails[type eq "work"]``); a URN
    or dotted name there is not a sub-attribute at all, and ``matches`` refuses it."""
    names: list[str] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, (And, Or)):
            stack += [current.left, current.right]
        elif isinstance(current, Not):
            stack.append(current.inner)
        elif isinstance(current, (Compare, Present)) and current.path.uri is None and current.path.sub is None:
            names.append(current.path.name)
    return names


def _member_ids(node: Filter) -> set[str] | None:
    """The ids of ``value eq "a" or value eq "b" …``; None for any other filter."""
    ids: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Or):
            stack += [current.left, current.right]
        elif (
            isinstance(current, Compare)
            and current.op == "eq"
            and current.path.uri is None
            and current.path.sub is None
            and current.path.name.lower() == "value"
            and isinstance(current.value, str)
        ):
            ids.add(current.value)
        else:
            return None
    return ids


class _Engine:
    def __init__(
        self,
        doc: dict[str, Any],
        schema: ResourceSchema,
        load_members: Callable[[], list[dict[str, Any]]] | None,
        max_len: int,
        undeclared: Undeclared,
    ) -> None:
        # Copy-on-write: ``base`` (the caller's document) is never modified. Each method below
        # builds new containers for what it changes (``dict(...)``, ``list(...)``, element
        # copies), and ``apply_resolved`` copies an extension's object on its first write.
        self.base = doc
        self.doc = dict(doc)
        self.schema = schema
        self.load_members = load_members
        self.max_len = max_len
        self.undeclared = undeclared
        self.members: _MemberLog | None = None
        self.loaded: list[dict[str, Any]] | None = None

    def member_changes(self) -> MemberChanges | None:
        if self.members is None:
            return None
        log = self.members
        return MemberChanges(list(log.adds.values()), set(log.remove), log.remove_all)

    def coerce(self, attribute: Attribute, value: Any, text: str) -> Any:
        return coerce_value(attribute, value, text, max_value_length=self.max_len, undeclared=self.undeclared)

    # -- dispatch ---------------------------------------------------------------------------

    def apply(self, op: PatchOperation) -> None:
        if op.path is None:
            if op.op == "remove":
                raise NoTarget("remove needs a path (RFC 7644 §3.5.2.2).")
            if not isinstance(op.value, dict):
                raise InvalidValue(f"{op.op} without a path needs an object of attributes as its value.")
            self.apply_object(op.op, None, op.value)
            return
        text = op.path_text or op.path.attr.text
        urn, rest = self.schema.split_urn(op.path.attr.text)
        if urn is not None and not rest and op.path.filter is None and op.path.sub is None:
            if self.schema.extension(urn) is None:
                raise InvalidPath(f"{text!r} is the core schema, not an attribute.")
            self.apply_extension(op.op, urn, op.value, text)
            return
        ref = self.resolve(op.path, text, op.value)
        if ref is None:
            return  # an undeclared attribute, ignored
        if ref.attribute.mutability == "readOnly" or (
            ref.sub is not None and ref.sub.mutability == "readOnly"
        ):
            raise Mutability(f"{text!r} is read-only.")
        self.apply_resolved(op.op, op.path, ref, op.value, text)

    def resolve(self, path: PatchPath, text: str, value: Any) -> AttrRef | None:
        """The attribute ``path`` names; None after handing an undeclared name to the policy
        (which raises when it rejects). ``InvalidPath`` for a shape the attribute cannot take."""
        ref = entra.resolve_attribute(self.schema, path.attr.text)
        if ref is None:
            for name in names_in(path.attr.text, value, self.schema.name):
                self.undeclared(name)
            return None
        if path.filter is not None and ref.attribute.type != "complex":
            raise InvalidPath(f"{text!r}: a value filter needs a complex attribute.")
        if path.filter is not None:
            unknown = [n for n in _filter_names(path.filter) if ref.attribute.sub(n) is None]
            for name in unknown:
                self.undeclared(f"{ref.path}.{name}")
            if unknown:
                return None  # it selects by something we never keep: nothing to operate on
        if path.sub is not None:
            sub = ref.attribute.sub(path.sub)
            if sub is None:
                self.undeclared(f"{ref.path}.{path.sub}")
                return None
            ref = AttrRef(ref.schema, ref.attribute, sub)
        return ref

    def apply_object(self, op: str, urn: str | None, value: dict[str, Any]) -> None:
        """A path-less value, or a bare extension URN's value: each key is a path (lenient)."""
        for key, raw in value.items():
            if not isinstance(key, str) or key.lower() == "schemas":
                continue
            key_text = f"{urn}:{key}" if urn else key
            key_urn, rest = self.schema.split_urn(key_text)
            if urn is None and key_urn is not None and not rest:
                if self.schema.extension(key_urn) is not None:
                    self.apply_extension(op, key_urn, raw, key)
                continue
            try:
                path = parse_patch_path(key_text)
            except InvalidPath:
                self.undeclared(key_text)  # not even an attribute path
                continue
            try:
                ref = self.resolve(path, key_text, raw)
            except UndeclaredPath:
                raise
            except InvalidPath:
                continue  # lenient, as in a resource body: a key of a shape no attribute takes
            if ref is None:
                continue
            if ref.attribute.mutability == "readOnly" or (
                ref.sub is not None and ref.sub.mutability == "readOnly"
            ):
                continue
            self.apply_resolved(op, path, ref, raw, key_text)

    def apply_extension(self, op: str, urn: str, value: Any, text: str) -> None:
        if op == "remove" or (op == "replace" and is_unassigned(value)):
            self.doc.pop(urn, None)
        elif isinstance(value, dict):
            self.apply_object(op, urn, value)
        elif not is_unassigned(value):
            raise InvalidValue(f"{text!r} needs an object of that extension's attributes.")

    def apply_resolved(self, op: str, path: PatchPath, ref: AttrRef, value: Any, text: str) -> None:
        if ref.attribute is MEMBERS:
            self.apply_members(op, path, ref, value, text)
            return
        if ref.schema == self.schema.core.urn:
            container = self.doc
        else:
            found = self.doc.get(ref.schema)
            if not isinstance(found, dict):
                if op == "remove":
                    return
                found = self.doc[ref.schema] = {}
            elif found is self.base.get(ref.schema):
                found = self.doc[ref.schema] = dict(found)
            container = found
        if path.filter is not None:
            self.apply_filtered(op, container, ref.attribute, path.filter, ref.sub, value, text)
        elif ref.sub is not None:
            self.apply_sub(op, container, ref.attribute, ref.sub, value, text)
        else:
            self.apply_attribute(op, container, ref.attribute, value, text)

    # -- whole attributes ---------------------------------------------------------------------

    def apply_attribute(
        self, op: str, container: dict[str, Any], attr: Attribute, value: Any, text: str
    ) -> None:
        name = attr.name
        if op == "remove":
            if attr.multi_valued and not is_unassigned(value):
                raise InvalidValue(
                    f"remove {text!r} takes no value; select values with a filter such as "
                    f'{attr.name}[value eq "…"].'
                )
            container.pop(name, None)
            return
        if attr.multi_valued:
            new = self.coerce(attr, [value] if isinstance(value, dict) else value, text)
            if op == "replace":
                _store(container, attr, new or [])
                return
            if new is None:
                return
            current = list(container.get(name) or [])
            added = []
            for element in new:
                if element not in current:
                    current.append(element)
                    added.append(element)
            _demote_primaries(current, added)
            _store(container, attr, current)
            return
        if attr.type == "complex":
            raw = entra.normalise_value(attr, value)
            if is_unassigned(raw) and raw != {}:
                container.pop(name, None)
                return
            if not isinstance(raw, dict):
                raise InvalidValue(f"{text!r} needs an object of sub-attributes.")
            current = dict(container.get(name) or {})
            for key, sub_raw in raw.items():
                sub = attr.sub(key)
                if sub is None:
                    self.undeclared(f"{text}.{key}")
                    continue
                if sub.mutability == "readOnly":
                    continue
                _set(current, sub.name, self.coerce(sub, sub_raw, f"{text}.{sub.name}"))
            _set(container, name, current or None)
            return
        _set(container, name, self.coerce(attr, value, text))

    def apply_sub(
        self, op: str, container: dict[str, Any], attr: Attribute, sub: Attribute, value: Any, text: str
    ) -> None:
        coerced = None if op == "remove" else self.coerce(sub, value, text)
        if attr.multi_valued:
            elements = [dict(e) for e in container.get(attr.name) or []]
            if not elements and coerced is not None:
                elements = [{}]
            for element in elements:
                _set(element, sub.name, coerced)
            kept = [e for e in elements if e]
            if coerced is True and sub.name == "primary" and len(kept) > 1:
                raise InvalidValue(f"{text!r}: only one value may be primary.")
            _store(container, attr, kept)
            return
        current = dict(container.get(attr.name) or {})
        _set(current, sub.name, coerced)
        _set(container, attr.name, current or None)

    # -- value filters --------------------------------------------------------------------------

    def apply_filtered(
        self,
        op: str,
        container: dict[str, Any],
        attr: Attribute,
        node: Filter,
        sub: Attribute | None,
        value: Any,
        text: str,
    ) -> None:
        raw = container.get(attr.name)
        if attr.multi_valued:
            elements = [dict(e) for e in raw] if isinstance(raw, list) else []
        else:
            elements = [dict(raw)] if isinstance(raw, dict) else []
        hits = [i for i, e in enumerate(elements) if matches(node, e, self.schema, within=attr)]
        if op == "remove":
            if sub is None:
                elements = [e for i, e in enumerate(elements) if i not in hits]
            else:
                for i in hits:
                    elements[i].pop(sub.name, None)
            _store(container, attr, [e for e in elements if e])
            return
        if sub is not None:
            coerced = self.coerce(sub, value, text)
            if hits:
                for i in hits:
                    _set(elements[i], sub.name, coerced)
                changed = [elements[i] for i in hits]
            elif coerced is None:
                return
            else:
                seed = self.seed(node, attr, text)
                changed = [{**seed, sub.name: coerced}]
                elements = elements + changed if attr.multi_valued else changed
        else:
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if is_unassigned(value):
                if op == "replace":
                    _store(container, attr, [e for i, e in enumerate(elements) if i not in hits])
                return
            coerced = self.coerce(attr, [value] if attr.multi_valued else value, text)
            if coerced is None:
                return
            new = coerced[0] if attr.multi_valued else coerced
            if hits:
                seed = self.seed(node, attr, text, required=False) if op == "replace" else {}
                for i in hits:
                    elements[i] = {**elements[i], **new} if op == "add" else {**seed, **new}
                changed = [elements[i] for i in hits]
            else:
                changed = [{**self.seed(node, attr, text), **new}]
                elements = elements + changed if attr.multi_valued else changed
        _demote_primaries(elements, changed)
        _store(container, attr, [e for e in elements if e])

    def seed(self, node: Filter, attr: Attribute, text: str, *, required: bool = True) -> dict[str, Any]:
        """The element an ``eq``-only filter describes (Entra P6), else NoTarget (or {})."""
        seed: dict[str, Any] = {}
        stack = [node]
        while stack:
            current = stack.pop()
            if isinstance(current, And):
                stack += [current.right, current.left]
                continue
            entry = self.seed_entry(current, attr, text)
            if entry is None or seed.get(entry[0], entry[1]) != entry[1]:
                if required:
                    raise NoTarget(
                        f"{text!r} matches no value, and its filter does not describe one to create."
                    )
                return {}
            seed[entry[0]] = entry[1]
        return seed

    def seed_entry(self, node: Filter, attr: Attribute, text: str) -> tuple[str, Any] | None:
        if not isinstance(node, Compare) or node.op != "eq" or node.path.uri is not None or node.path.sub:
            return None
        sub = attr.sub(node.path.name)
        if sub is None or sub.mutability == "readOnly":
            return None
        value = self.coerce(sub, node.value, text)
        return None if value is None else (sub.name, value)

    # -- group members ----------------------------------------------------------------------------

    def apply_members(self, op: str, path: PatchPath, ref: AttrRef, value: Any, text: str) -> None:
        if ref.sub is not None:
            raise InvalidPath(f"{text!r}: a member's sub-attributes cannot be changed; remove and add it.")
        if self.members is None:
            self.members = _MemberLog()
        log = self.members
        if path.filter is not None:
            if op != "remove":
                raise InvalidPath(f"{text!r}: a member filter can only select members to remove.")
            ids = _member_ids(path.filter)
            log.drop(ids if ids is not None else self.members_matching(path.filter))
            return
        if op == "remove":
            if not is_unassigned(value):
                raise InvalidValue(
                    f'remove {text!r} takes no value; select members with members[value eq "…"].'
                )
            log.clear()
            return
        new = self.coerce(MEMBERS, [value] if isinstance(value, dict) else value, text) or []
        if op == "replace":
            log.clear()
        log.add(new)

    def members_matching(self, node: Filter) -> set[str]:
        if self.load_members is None:
            raise InvalidFilter('Only members[value eq "…"] filters (or an "or" of them) are supported here.')
        if self.loaded is None:
            self.loaded = [
                m for m in self.load_members() if isinstance(m, dict) and isinstance(m.get("value"), str)
            ]
        log = self.members
        assert log is not None
        current = (
            {} if log.remove_all else {m["value"]: m for m in self.loaded if m["value"] not in log.remove}
        )
        current.update(log.adds)
        return {i for i, m in current.items() if matches(node, m, self.schema, within=MEMBERS)}


def _set(container: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        container.pop(key, None)
    else:
        container[key] = value


def _store(container: dict[str, Any], attr: Attribute, elements: list[Any]) -> None:
    if not elements:
        container.pop(attr.name, None)
    else:
        container[attr.name] = elements if attr.multi_valued else elements[0]


def _demote_primaries(elements: list[dict[str, Any]], winners: list[dict[str, Any]]) -> None:
    """RFC 7644 §3.5.2: a value set ``primary: true`` makes every other value non-primary."""
    if not any(w.get("primary") is True for w in winners):
        return
    winner_ids = {id(w) for w in winners}
    for index, element in enumerate(elements):
        if id(element) not in winner_ids and element.get("primary") is True:
            # A new element, not ``element["primary"] = False``: it may be the stored document's.
            elements[index] = {**element, "primary": False}
