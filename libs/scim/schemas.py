"""The resource schemas (RFC 7643 §4, §8.7.1): one source for validation, filters and /Schemas.

The documents below are exactly what ``GET /Schemas`` publishes; the validator, the PATCH
engine and the filter translator all resolve attribute names through ``ResourceSchema``,
so what we advertise is what we enforce. Names resolve case-insensitively (RFC 7643 §2.1).

Why not scim2-models: its pydantic models are strict where Entra is sloppy (string
booleans, capitalised sub-attribute names, bare-string managers, ``null`` everywhere),
they allocate a model per request on the hot path, and we need the attribute
characteristics themselves (caseExact, uniqueness, mutability) to push filters into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
LIST_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
SEARCH_REQUEST = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"
SCHEMA_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
SERVICE_PROVIDER_CONFIG = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"


@dataclass(frozen=True)
class Attribute:
    """One attribute definition with its RFC 7643 §2.2 characteristics."""

    name: str
    type: str = "string"
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    description: str = ""
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    sub_attributes: tuple[Attribute, ...] = ()

    def sub(self, name: str) -> Attribute | None:
        return self._subs.get(name.lower())

    @cached_property
    def _subs(self) -> dict[str, Attribute]:
        return {a.name.lower(): a for a in self.sub_attributes}

    def to_document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "multiValued": self.multi_valued,
            "description": self.description or self.name,
            "required": self.required,
        }
        if self.type in ("string", "reference", "binary"):
            doc["caseExact"] = self.case_exact
        doc.update(mutability=self.mutability, returned=self.returned, uniqueness=self.uniqueness)
        if self.canonical_values:
            doc["canonicalValues"] = list(self.canonical_values)
        if self.reference_types:
            doc["referenceTypes"] = list(self.reference_types)
        if self.sub_attributes:
            doc["subAttributes"] = [a.to_document() for a in self.sub_attributes]
        return doc


def _s(name: str, **kw: Any) -> Attribute:
    return Attribute(name=name, **kw)


def _multi(name: str, *extra: Attribute, value_type: str = "string", canonical: tuple[str, ...] = (),
           ref: tuple[str, ...] = (), description: str = "") -> Attribute:
    """A multi-valued complex attribute with the RFC 7643 §2.4 default sub-attributes."""
    subs = (
        _s("value", type=value_type, reference_types=ref),
        _s("display"),
        _s("type", canonical_values=canonical),
        _s("primary", type="boolean"),
        *extra,
    )
    return Attribute(name=name, type="complex", multi_valued=True, sub_attributes=subs, description=description)


_ID = _s("id", case_exact=True, mutability="readOnly", returned="always", uniqueness="server")
_EXTERNAL_ID = _s("externalId", case_exact=True)
_META = Attribute(
    name="meta", type="complex", mutability="readOnly",
    sub_attributes=(
        _s("resourceType", case_exact=True, mutability="readOnly"),
        _s("created", type="dateTime", mutability="readOnly"),
        _s("lastModified", type="dateTime", mutability="readOnly"),
        _s("location", type="reference", case_exact=True, mutability="readOnly", reference_types=("uri",)),
        _s("version", case_exact=True, mutability="readOnly"),
    ),
)
COMMON_ATTRIBUTES: tuple[Attribute, ...] = (_ID, _EXTERNAL_ID, _META)

USER_ATTRIBUTES: tuple[Attribute, ...] = (
    _s("userName", required=True, uniqueness="server"),
    Attribute(name="name", type="complex", sub_attributes=tuple(
        _s(n) for n in ("formatted", "familyName", "givenName", "middleName", "honorificPrefix", "honorificSuffix")
    )),
    _s("displayName"), _s("nickName"),
    _s("profileUrl", type="reference", reference_types=("external",)),
    _s("title"), _s("userType"), _s("preferredLanguage"), _s("locale"), _s("timezone"),
    _s("active", type="boolean"),
    _s("password", mutability="writeOnly", returned="never"),
    _multi("emails", canonical=("work", "home", "other")),
    _multi("phoneNumbers", canonical=("work", "home", "mobile", "fax", "pager", "other")),
    _multi("ims", canonical=("aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo")),
    _multi("photos", value_type="reference", ref=("external",), canonical=("photo", "thumbnail")),
    Attribute(name="addresses", type="complex", multi_valued=True, sub_attributes=(
        *(_s(n) for n in ("formatted", "streetAddress", "locality", "region", "postalCode", "country")),
        _s("type", canonical_values=("work", "home", "other")),
        _s("primary", type="boolean"),
    )),
    Attribute(name="groups", type="complex", multi_valued=True, mutability="readOnly", sub_attributes=(
        _s("value", mutability="readOnly"),
        _s("$ref", type="reference", mutability="readOnly", reference_types=("User", "Group")),
        _s("display", mutability="readOnly"),
        _s("type", mutability="readOnly", canonical_values=("direct", "indirect")),
    )),
    _multi("entitlements"), _multi("roles"),
    _multi("x509Certificates", value_type="binary"),
)

ENTERPRISE_ATTRIBUTES: tuple[Attribute, ...] = (
    _s("employeeNumber"), _s("costCenter"), _s("organization"), _s("division"), _s("department"),
    Attribute(name="manager", type="complex", sub_attributes=(
        _s("value", case_exact=True),
        _s("$ref", type="reference", reference_types=("User",)),
        _s("displayName", mutability="readOnly"),
    )),
)

GROUP_ATTRIBUTES: tuple[Attribute, ...] = (
    # RFC 7643 §4.2 gives it no uniqueness, and tenants repeat group names; an app may ask for
    # "server" (SCIM_GROUP_DISPLAY_NAME_UNIQUENESS), and /Schemas then says so (``as_enforced``).
    _s("displayName", required=True),
    Attribute(name="members", type="complex", multi_valued=True, sub_attributes=(
        _s("value", case_exact=True, mutability="immutable"),
        _s("$ref", type="reference", mutability="immutable", reference_types=("User", "Group")),
        _s("display", mutability="readOnly", returned="request"),
        _s("type", mutability="immutable", canonical_values=("User", "Group")),
    )),
)


@dataclass(frozen=True)
class SchemaDoc:
    urn: str
    name: str
    description: str
    attributes: tuple[Attribute, ...]

    def to_document(self, base_url: str = "") -> dict[str, Any]:
        return {
            "schemas": [SCHEMA_SCHEMA],
            "id": self.urn,
            "name": self.name,
            "description": self.description,
            "attributes": [a.to_document() for a in self.attributes],
            "meta": {"resourceType": "Schema", "location": f"{base_url}/Schemas/{self.urn}"},
        }


_UNRESOLVED = object()
_RESOLVED_KEPT = 1024
"""Names each resource type remembers resolving (``ResourceSchema.resolve``)."""


@dataclass(frozen=True)
class AttrRef:
    """A resolved attribute: which schema holds it, its definition, and an optional sub-attribute."""

    schema: str
    attribute: Attribute
    sub: Attribute | None = None

    @property
    def path(self) -> str:
        """Canonical dotted path inside the resource, extension URN first (``urn:…:manager.value``)."""
        prefix = "" if self.schema in (USER, GROUP) or self.attribute in COMMON_ATTRIBUTES else self.schema + ":"
        return prefix + self.attribute.name + ("." + self.sub.name if self.sub else "")

    @property
    def leaf(self) -> Attribute:
        return self.sub or self.attribute


@dataclass(frozen=True)
class ResourceSchema:
    """A resource type: its core schema, its extensions, and name resolution over them."""

    name: str
    endpoint: str
    core: SchemaDoc
    extensions: tuple[SchemaDoc, ...] = field(default=())

    @cached_property
    def _by_urn(self) -> dict[str, SchemaDoc]:
        return {s.urn.lower(): s for s in (self.core, *self.extensions)}

    @cached_property
    def _core_names(self) -> dict[str, Attribute]:
        return {a.name.lower(): a for a in (*COMMON_ATTRIBUTES, *self.core.attributes)}

    @cached_property
    def never_returned(self) -> tuple[str, ...]:
        """Core attributes a response never carries (RFC 7643 §2.2 ``returned: never``)."""
        return tuple(a.name for a in self.core.attributes if a.returned == "never")

    @property
    def schema_urns(self) -> tuple[str, ...]:
        return (self.core.urn, *(e.urn for e in self.extensions))

    def extension(self, urn: str) -> SchemaDoc | None:
        doc = self._by_urn.get(urn.lower())
        return doc if doc is not None and doc is not self.core else None

    @cached_property
    def _urns_longest_first(self) -> list[str]:
        return sorted(self._by_urn, key=len, reverse=True)

    @cached_property
    def _extension_names(self) -> dict[str, dict[str, Attribute]]:
        return {urn: {a.name.lower(): a for a in doc.attributes} for urn, doc in self._by_urn.items()}

    def top_level(self, schema_urn: str | None = None) -> dict[str, Attribute]:
        if schema_urn is None or schema_urn.lower() == self.core.urn.lower():
            return self._core_names
        return self._extension_names[schema_urn.lower()]

    def split_urn(self, text: str) -> tuple[str | None, str]:
        """``urn:…:enterprise:2.0:User:manager.value`` → (enterprise URN, ``manager.value``).

        A bare schema URN (``urn:…:enterprise:2.0:User``) returns (URN, "").
        """
        if text[:4].lower() != "urn:":  # nearly every name Entra sends: no URN to split off
            return None, text
        lowered = text.lower()
        for urn in self._urns_longest_first:
            if lowered == urn:
                return self._by_urn[urn].urn, ""
            if lowered.startswith(urn + ":"):
                return self._by_urn[urn].urn, text[len(urn) + 1:]
        return None, text

    @cached_property
    def _resolved(self) -> dict[str, AttrRef | None]:
        return {}

    def resolve(self, text: str) -> AttrRef | None:
        """Resolve ``name``, ``name.sub`` or a URN-qualified form; ``None`` when unknown.

        Remembered per name: a create resolves each of its ~9 names on every request, and the
        few names clients send come back again and again (the first ``_RESOLVED_KEPT`` names
        seen are kept, so names a client makes up cannot grow the memory)."""
        known = self._resolved
        ref = known.get(text, _UNRESOLVED)
        if ref is _UNRESOLVED:
            ref = self._resolve(text)
            if len(known) < _RESOLVED_KEPT:
                known[text] = ref
        return ref  # type: ignore[return-value]

    def _resolve(self, text: str) -> AttrRef | None:
        urn, rest = self.split_urn(text)
        if not rest:
            return None
        name, _, sub_name = rest.partition(".")
        if "." in sub_name:
            return None
        attrs = self.top_level(urn)
        attribute = attrs.get(name.lower())
        if attribute is None:
            return None
        schema = urn or self.core.urn
        if not sub_name:
            return AttrRef(schema, attribute)
        sub = attribute.sub(sub_name)
        return AttrRef(schema, attribute, sub) if sub is not None else None

    def resource_type_document(self, base_url: str = "") -> dict[str, Any]:
        return {
            "schemas": [RESOURCE_TYPE_SCHEMA],
            "id": self.name,
            "name": self.name,
            "endpoint": "/" + self.endpoint,
            "description": self.core.description,
            "schema": self.core.urn,
            "schemaExtensions": [{"schema": e.urn, "required": False} for e in self.extensions],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{self.name}"},
        }


USER_SCHEMA = SchemaDoc(USER, "User", "User Account", USER_ATTRIBUTES)
ENTERPRISE_USER_SCHEMA = SchemaDoc(ENTERPRISE_USER, "EnterpriseUser", "Enterprise User", ENTERPRISE_ATTRIBUTES)
GROUP_SCHEMA = SchemaDoc(GROUP, "Group", "Group", GROUP_ATTRIBUTES)

USERS = ResourceSchema("User", "Users", USER_SCHEMA, (ENTERPRISE_USER_SCHEMA,))
GROUPS = ResourceSchema("Group", "Groups", GROUP_SCHEMA)

RESOURCE_TYPES: dict[str, ResourceSchema] = {"User": USERS, "Group": GROUPS}
BY_ENDPOINT: dict[str, ResourceSchema] = {r.endpoint.lower(): r for r in RESOURCE_TYPES.values()}
ALL_SCHEMAS: tuple[SchemaDoc, ...] = (USER_SCHEMA, ENTERPRISE_USER_SCHEMA, GROUP_SCHEMA)


def as_enforced(doc: SchemaDoc, *, unique_group_names: bool) -> SchemaDoc:
    """``doc`` as one app enforces it: a Group's ``displayName`` is ``uniqueness: server`` in an
    app whose setting asks for it (the one uniqueness that is a setting), every other
    attribute as declared."""
    if doc.urn != GROUP or not unique_group_names:
        return doc
    return replace(doc, attributes=tuple(replace(a, uniqueness="server") if a.name == "displayName" else a
                                         for a in doc.attributes))
