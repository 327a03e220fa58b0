"""Attribute mapping and scope: which SCIM values land in which target field, for whom.

A connector's mapping for one resource type is a table ``target field → source``, where a
source is a SCIM path (``userName``, ``name.givenName``, ``emails[type eq "work"].value``,
``urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department``, or ``manager``
for the enterprise manager's id) or a table with a few safe transforms::

    login    = { path = "userName", transform = "lowercase" }
    phones   = { path = "phoneNumbers.value", join = ", " }
    country  = { path = "addresses[type eq \"work\"].country", default = "FR" }
    gecos    = { template = "{name.givenName} {name.familyName}" }
    boss     = { path = "manager", ref = "userName" }   # the manager's userName, not its id

No expressions, no code: a mapping cannot run anything but these steps. A ``ref`` replaces
a referenced resource's id by one of its attributes (connectors add their own refs, such
as ``dn`` for LDAP). The scope decides whether a resource is delivered at all: users by a
SCIM filter and/or membership of named groups, groups by a SCIM filter.

No attribute that is ``returned: never`` (RFC 7643 §2.2) leaves through a connector unless
its mapping names it: a connector that sends the whole document (a web hook or SCIM relay
without a mapping) sends ``withhold``'s copy. ``password`` cannot be named at all: the store
keeps only its argon2id hash, which no application can use as a password (a SCIM relay
would make it the remote account's password), so a mapping naming it, by path, template
or ``ref``, is refused when the config is loaded. A configured extension attribute that is
``returned: never`` is kept as the client wrote it: a mapping that names it delivers it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from libs.scim.evaluate import matches
from libs.scim.filter import Filter, parse_filter
from libs.scim.schemas import GROUPS, RESOURCE_TYPES, USER, USERS

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
TRANSFORMS: dict[str, Callable[[str], str]] = {"lowercase": str.lower, "uppercase": str.upper, "strip": str.strip}
_SEGMENT = re.compile(r'^(?P<name>[^\[\]]+)(?:\[(?P<attr>\w+)\s+eq\s+(?P<value>"[^"]*"|true|false)\])?$', re.I)
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


class MappingError(ValueError):
    """A connector's mapping or scope in the config file cannot be used."""


HASHED = "password"
"""The core attribute the store keeps only as an argon2id hash: no mapping may name it."""


def withhold(resource_type: str, doc: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``doc`` without its ``returned: never`` attributes, core and extension ones."""
    schema = RESOURCE_TYPES[resource_type]
    never = {name.lower() for name in schema.never_returned}
    out = {k: v for k, v in doc.items() if k.lower() not in never}
    for ext in schema.extensions:
        hidden = {a.name.lower() for a in ext.attributes if a.returned == "never"}
        key = next((k for k in out if k.lower() == ext.urn.lower()), None)
        if hidden and key is not None and isinstance(out[key], dict):
            out[key] = {k: v for k, v in out[key].items() if k.lower() not in hidden}
    return out


def _names_hashed(path: str) -> bool:
    """Whether a mapping path (``password``, its URN form, a sub-path of it) reads the hash."""
    if path.lower().startswith(USER.lower() + ":"):
        path = path[len(USER) + 1:]
    return re.split(r"[.\[]", path.strip(), maxsplit=1)[0].strip().lower() == HASHED


def _get_ci(container: dict[str, Any], name: str) -> Any:
    if name in container:
        return container[name]
    lowered = name.lower()
    for key, value in container.items():
        if key.lower() == lowered:
            return value
    return None


def _split(path: str, doc: dict[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The container a path starts in (the doc or one of its extensions) and its segments."""
    if path.lower() == "manager":
        path = f"{ENTERPRISE}:manager.value"
    if path.lower().startswith("urn:"):
        for key in sorted((k for k in doc if k.lower().startswith("urn:")), key=len, reverse=True):
            if path.lower().startswith(key.lower() + ":"):
                return doc[key], path[len(key) + 1:].split(".")
        return None, []
    return doc, path.split(".")


def _filter_elements(elements: list[Any], attr: str, raw: str) -> list[Any]:
    wanted: Any = raw.strip('"').lower() if raw.startswith('"') else raw.lower() == "true"
    out = []
    for element in elements:
        if not isinstance(element, dict):
            continue
        value = _get_ci(element, attr)
        if isinstance(value, str):
            value = value.lower()
        if value == wanted:
            out.append(element)
    return out


def resolve(doc: dict[str, Any], path: str) -> list[Any]:
    """Every value a path names in a SCIM document (primary element first)."""
    container, segments = _split(path, doc)
    current: list[Any] = [container] if container is not None else []
    for segment in segments:
        m = _SEGMENT.match(segment.strip())
        if m is None:
            raise MappingError(f"cannot read the path {path!r}")
        nxt: list[Any] = []
        for item in current:
            if not isinstance(item, dict):
                continue
            value = _get_ci(item, m["name"])
            if isinstance(value, list):
                elements = value
                if m["attr"]:
                    elements = _filter_elements(elements, m["attr"], m["value"])
                primary = [e for e in elements if isinstance(e, dict) and e.get("primary") is True]
                nxt.extend(primary + [e for e in elements if e not in primary])
            elif value is not None:
                nxt.append(value)
        current = nxt
    return [v for v in current if v is not None and v != ""]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class FieldSource:
    path: str | None = None
    template: str | None = None
    transform: str | None = None
    join: str | None = None
    default: Any = None
    ref: str | None = None

    @classmethod
    def parse(cls, target: str, spec: Any) -> FieldSource:
        if isinstance(spec, str):
            return cls(path=spec)
        if not isinstance(spec, dict):
            raise MappingError(f"field {target!r}: expected a path or a table, not {spec!r}")
        unknown = set(spec) - {"path", "template", "transform", "join", "default", "ref"}
        if unknown:
            raise MappingError(f"field {target!r}: unknown keys {sorted(unknown)}")
        if bool(spec.get("path")) == bool(spec.get("template")):
            raise MappingError(f"field {target!r}: give exactly one of path or template")
        if spec.get("transform") and spec["transform"] not in TRANSFORMS:
            raise MappingError(f"field {target!r}: transform must be one of {sorted(TRANSFORMS)}")
        return cls(**spec)

    def names_hashed(self) -> bool:
        """Whether this source reads ``password`` (its path, a placeholder of its template, its ref)."""
        paths = [self.path or "", self.ref or "", *_PLACEHOLDER.findall(self.template or "")]
        return any(_names_hashed(p) for p in paths if p)

    def value(self, doc: dict[str, Any], refs: Callable[[str, str], Any]) -> Any:
        if self.template is not None:
            out = _PLACEHOLDER.sub(lambda m: " ".join(_text(v) for v in resolve(doc, m[1])[:1]), self.template)
            out = " ".join(out.split())
            values: list[Any] = [out] if out else []
        else:
            values = resolve(doc, self.path or "")
            if self.ref:
                values = [r for r in (refs(self.ref, v) for v in values) if r is not None]
        if self.transform:
            values = [TRANSFORMS[self.transform](_text(v)) for v in values]
        if self.join is not None:
            joined = self.join.join(_text(v) for v in values)
            return joined if joined else self.default
        if not values:
            return self.default
        first = values[0]
        return first if isinstance(first, (str, int, float, bool)) else _text(first)


@dataclass
class Mapping:
    """target field → source, for one resource type of one connector."""

    fields: dict[str, FieldSource]
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: dict[str, Any], *, reserved: tuple[str, ...] = ()) -> Mapping:
        raw = spec.get("fields") or spec.get("columns") or spec.get("attributes") or {}
        fields = {name: FieldSource.parse(name, source) for name, source in raw.items()}
        for name, source in fields.items():
            if source.names_hashed():
                raise MappingError(f"field {name!r}: password is returned: never, and scimbus keeps only an "
                                   "argon2id hash of it, which no application can use; no connector delivers it")
        options = {k: v for k, v in spec.items() if k not in ("fields", "columns", "attributes")}
        return cls(fields, options)

    def render(self, doc: dict[str, Any], lookup, extra_refs: dict[str, Callable[[dict], Any]] | None = None
               ) -> dict[str, Any]:
        def refs(name: str, referenced_id: Any) -> Any:
            found = lookup("User", [str(referenced_id)]).get(str(referenced_id))
            if found is None:
                return None
            if extra_refs and name in extra_refs:
                return extra_refs[name](found)
            values = resolve(found, name)
            return values[0] if values else None
        return {name: source.value(doc, refs) for name, source in self.fields.items()}


@dataclass
class Scope:
    """Which resources a connector receives."""

    user_filter: Filter | None = None
    groups: frozenset[str] = frozenset()
    group_filter: Filter | None = None

    @classmethod
    def parse(cls, spec: dict[str, Any] | None) -> Scope:
        spec = spec or {}
        try:
            return cls(
                parse_filter(spec["users"]) if spec.get("users") else None,
                frozenset(g.lower() for g in spec.get("member_of", [])),
                parse_filter(spec["groups"]) if spec.get("groups") else None,
            )
        except Exception as exc:
            raise MappingError(f"scope: {exc}") from exc

    def includes(self, resource_type: str, doc: dict[str, Any]) -> bool:
        if resource_type == "User":
            if self.user_filter is not None and not matches(self.user_filter, doc, USERS):
                return False
            if self.groups:
                names = {str(g.get("display", "")).lower() for g in doc.get("groups") or []}
                return bool(names & self.groups)
            return True
        if self.group_filter is not None:
            return matches(self.group_filter, doc, GROUPS)
        return True
