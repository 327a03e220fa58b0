"""``ldap``: users and groups into an LDAP directory (``inetOrgPerson``, ``groupOfNames``).

::

    [connectors.corp]
    type = "ldap"
    url = "ldap://ldap.corp.example:389"
    bind_dn = "cn=admin,dc=corp,dc=example"
    password = "…"
    [connectors.corp.users]
    dn = "uid={uid},ou=people,dc=corp,dc=example"   # a template over the mapped attributes
    object_classes = ["inetOrgPerson"]
    on_delete = "delete"                             # or "disable" (attribute) or "move"
    attributes = { uid = "userName", cn = "displayName", sn = "name.familyName", employeeNumber = "id",
                   manager = { path = "manager", ref = "dn" } }
    [connectors.corp.groups]
    dn = "cn={cn},ou=groups,dc=corp,dc=example"
    object_classes = ["groupOfNames"]
    attributes = { cn = "displayName" }

The entry's DN is computed from its attributes, so a change of the naming attribute is a
rename (modify DN), after which every ``member`` value naming the old DN is rewritten (no
referential-integrity overlay is assumed). Group members are user DNs; ``groupOfNames``
must have a member, so an empty group holds ``empty_member`` (default: the group itself).
``ref = "dn"`` maps a referenced user (the manager) to its DN. Removal deletes the entry,
sets ``disable.attribute`` to ``disable.value``, or moves it under ``disabled_base``.

An attribute mapped from ``id`` (``employeeNumber`` above) anchors the entry. The DN the
delivery ledger holds may be stale: a rename whose answer was lost (a timeout, a killed
deliverer) moved the entry without the ledger learning its new DN. Renames and removals find
the entry by its anchor wherever it is, and never take another resource's entry that took
the recorded DN since. Without an anchor, the recorded DN is all they go by, and a removal
after such a rename leaves the entry. Renames and removals search by the anchor: index it
(``eq``) in a large directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE, Connection, Server
from ldap3.core.exceptions import (
    LDAPCommunicationError, LDAPException, LDAPMaximumRetriesError, LDAPResponseTimeoutError, LDAPSocketOpenError,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn, safe_dn

from libs.connectors.base import Connector, Lookup, Previous
from libs.connectors.errors import Conflict, Rejected, Unavailable

_SECTION = {"User": "users", "Group": "groups"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# busy, unavailable, unwillingToPerform-by-load, other: worth a retry; the rest are refusals.
_RETRYABLE_RESULTS = frozenset({51, 52, 80})
NO_SUCH_OBJECT, ALREADY_EXISTS = 32, 68


def norm_dn(dn: str) -> str:
    try:
        return safe_dn(dn).lower()
    except LDAPException:
        return dn.lower()


@dataclass
class LdapConnector(Connector):
    kind_name = "ldap"
    _conn: Connection | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, **common) -> LdapConnector:
        options = common["options"]
        if not str(options.get("url", "")).startswith(("ldap://", "ldaps://")):
            raise ValueError("url must be an ldap:// or ldaps:// URL")
        for kind, mapping in common["mappings"].items():
            opts = mapping.options
            if "dn" not in opts or not _PLACEHOLDER.search(opts["dn"]):
                raise ValueError(f"{_SECTION[kind]}.dn must be a template such as uid={{uid}},ou=people,…")
            missing = [p for p in _PLACEHOLDER.findall(opts["dn"]) if p not in mapping.fields]
            if missing:
                raise ValueError(f"{_SECTION[kind]}.dn uses unmapped attributes {missing}")
            opts.setdefault("object_classes", ["inetOrgPerson"] if kind == "User" else ["groupOfNames"])
            if opts.get("on_delete", "delete") not in ("delete", "disable", "move"):
                raise ValueError(f"{_SECTION[kind]}.on_delete is delete, disable or move")
        return cls(**common)

    # ------------------------------------------------------------------ plumbing
    @property
    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed:
            server = Server(self.options["url"], connect_timeout=int(self.options.get("timeout", 5)))
            conn = Connection(server, self.options.get("bind_dn"), self.options.get("password"),
                              receive_timeout=int(self.options.get("timeout", 5)) * 2, raise_exceptions=False)
            try:
                if not conn.bind():
                    raise self._refusal(conn.result, "bind")
            except LDAPSocketOpenError as exc:
                raise Unavailable(f"LDAP server unreachable: {exc}") from exc
            except LDAPException as exc:
                raise Unavailable(f"LDAP connection failed: {exc}") from exc
            self._conn = conn
        return self._conn

    def _refusal(self, result: dict, what: str) -> Exception:
        code = result.get("result")
        message = f"LDAP {what} failed: {result.get('description')} ({code}) {result.get('message', '')}".strip()
        if code in _RETRYABLE_RESULTS or code is None:
            return Unavailable(message)
        if code == ALREADY_EXISTS:
            return Conflict(message)
        return Rejected(message)

    def _op(self, what: str, call, *, ok: tuple[int, ...] = ()) -> int:
        """Run one LDAP operation; returns its result code when it is success or in ``ok``."""
        try:
            call(self.conn)
        except (LDAPCommunicationError, LDAPResponseTimeoutError, LDAPMaximumRetriesError) as exc:
            self._drop()
            raise Unavailable(f"LDAP {what}: {exc}") from exc
        except LDAPException as exc:  # refused by ldap3's schema check before sending: bad data
            raise Rejected(f"LDAP {what}: {exc}") from exc
        result = self._conn.result if self._conn is not None else {}
        code = result.get("result")
        if code == 0 or code in ok:
            return code
        if code is None:
            self._drop()
        raise self._refusal(result, what)

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.unbind()
            except LDAPException:
                pass
        self._conn = None

    def _search(self, base: str, flt: str, attrs: list[str], scope=SUBTREE) -> list[dict[str, Any]]:
        code = self._op(f"search {base}", lambda c: c.search(base, flt, scope, attributes=attrs),
                        ok=(NO_SUCH_OBJECT,))
        if code == NO_SUCH_OBJECT:
            return []
        return [{"dn": e["dn"], **e["attributes"]} for e in self._conn.response if e.get("type") == "searchResEntry"]

    # ------------------------------------------------------------------ mapping
    def dn(self, resource_type: str, fields: dict[str, Any]) -> str:
        template = self.mappings[resource_type].options["dn"]
        return _PLACEHOLDER.sub(lambda m: escape_rdn(str(fields.get(m[1]) or "")), template)

    def _base(self, resource_type: str) -> str:
        return ",".join(f"{a}={v}" for a, v, _ in parse_dn(self.mappings[resource_type].options["dn"])[1:])

    def render(self, resource_type: str, doc: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        def user_dn(user: dict[str, Any]) -> str:
            return self.dn("User", self.mappings["User"].render(user, lookup))
        refs = {"dn": user_dn} if "User" in self.mappings else {}
        fields = self.mappings[resource_type].render(doc, lookup, refs)
        if resource_type == "Group" and "User" in self.mappings:
            ids = [m["value"] for m in doc.get("members") or [] if m.get("type", "User") == "User"]
            users = lookup("User", ids)
            fields["member"] = sorted(norm_dn(user_dn(u)) for u in users.values() if self.scope.includes("User", u))
        return fields

    def key(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> str:
        return norm_dn(self.dn(resource_type, fields))

    def _anchor(self, resource_type: str) -> str | None:
        """The attribute holding the resource's SCIM id (mapped from ``id``), a name no rename changes."""
        for name, source in self.mappings[resource_type].fields.items():
            if (source.path or "").lower() == "id" and source.ref is None:
                return name
        return None

    def _entries(self, resource_type: str, resource_id: str, dn: str | None) -> list[str]:
        """The DNs of the resource's entries, given ``dn``, the ledger's last word on it.

        That word may be stale: a rename whose answer was lost (a timeout, a killed deliverer)
        moved the entry without the ledger learning its new DN, and a deletion sent to the old
        one would succeed and leave the entry for good. The anchor finds the entry under any
        name, and keeps ``dn`` from naming another resource's entry that took the name since;
        ``dn`` still counts when its entry carries no anchor value (written before the anchor
        was mapped). Without an anchor, ``dn`` is all there is to go by.
        """
        anchor = self._anchor(resource_type)
        if anchor is None:
            return [dn] if dn else []
        mapping = self.mappings[resource_type]
        value = escape_filter_chars(str(mapping.fields[anchor].value({"id": resource_id}, lambda *_: None)))
        cls = escape_filter_chars(mapping.options["object_classes"][0])
        found = [e["dn"] for e in self._search(self._base(resource_type),
                                               f"(&(objectClass={cls})({anchor}={value}))", [])]
        if dn and norm_dn(dn) not in {norm_dn(f) for f in found} \
                and self._search(dn, f"(!({anchor}=*))", [], scope=BASE):
            found.append(dn)
        return found

    def _orphaned(self, dn: str | None, held: list[str]) -> bool:
        """Whether member values naming ``dn`` are the resource's though no entry of it is there:
        a rename whose answer was lost moved the entry before its groups were rewritten. Values
        naming another resource's entry, which took the name since, are not."""
        return bool(dn) and norm_dn(dn) not in {norm_dn(h) for h in held} \
            and not self._search(dn, "(objectClass=*)", [], scope=BASE)

    def _attributes(self, resource_type: str, dn: str, fields: dict[str, Any]) -> dict[str, list[str]]:
        out = {}
        for name, value in fields.items():
            if isinstance(value, list):
                out[name] = [str(v) for v in value]
            else:
                out[name] = [] if value is None or value == "" else [str(value).upper() if isinstance(value, bool)
                                                                    else str(value)]
        if resource_type == "Group" and "member" in out and not out["member"]:
            out["member"] = [self.mappings["Group"].options.get("empty_member") or dn]
        return out

    # ------------------------------------------------------------------ contract
    def apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any], previous: Previous,
              lookup: Lookup) -> str:
        dn = self.dn(resource_type, fields)
        if previous.present and previous.remote_id and norm_dn(previous.remote_id) != norm_dn(dn):
            self._move(resource_type, doc["id"], previous.remote_id, dn)
        attrs = self._attributes(resource_type, dn, fields)
        opts = self.mappings[resource_type].options
        present = {k: v for k, v in attrs.items() if v}
        code = self._op(f"add {dn}", lambda c: c.add(dn, list(opts["object_classes"]), present),
                        ok=(ALREADY_EXISTS,))
        if code == ALREADY_EXISTS:
            changes = {k: [(MODIFY_REPLACE, v)] for k, v in attrs.items()}
            self._op(f"modify {dn}", lambda c: c.modify(dn, changes))
        return dn

    def _move(self, resource_type: str, resource_id: str, old: str, new: str) -> None:
        """Rename the resource's entry to ``new``, and every member value naming it by an older DN
        (a rename whose answer was lost may have moved the entry but not rewritten its groups)."""
        held = self._entries(resource_type, resource_id, old)
        if held and norm_dn(new) not in {norm_dn(dn) for dn in held}:
            self._rename(held[0], new)
        former = [dn for dn in held if norm_dn(dn) != norm_dn(new)] + ([old] if self._orphaned(old, held) else [])
        for dn in former:
            self._rewrite_members(dn, new)

    def _rename(self, old: str, new: str) -> None:
        parts = parse_dn(new)
        rdn = f"{parts[0][0]}={parts[0][1]}"
        superior = ",".join(f"{a}={v}" for a, v, _ in parts[1:])
        old_superior = ",".join(f"{a}={v}" for a, v, _ in parse_dn(old)[1:])
        move = superior if norm_dn(superior) != norm_dn(old_superior) else None
        self._op(f"rename {old}", lambda c: c.modify_dn(old, rdn, new_superior=move),
                 ok=(NO_SUCH_OBJECT, ALREADY_EXISTS))

    def _rewrite_members(self, old: str, new: str | None) -> None:
        if "Group" not in self.mappings:
            return
        for group in self._search(self._base("Group"), f"(member={escape_filter_chars(old)})", ["member"]):
            changes = {"member": [(MODIFY_DELETE, [old])] + ([(MODIFY_ADD, [new])] if new else [])}
            if not new and len(group.get("member", [])) <= 1:
                placeholder = self.mappings["Group"].options.get("empty_member") or group["dn"]
                changes = {"member": [(MODIFY_REPLACE, [placeholder])]}
            self._op(f"modify {group['dn']}", lambda c, g=group, ch=changes: c.modify(g["dn"], ch),
                     ok=(16, 20))  # noSuchAttribute / attributeOrValueExists: already as wanted

    def remove(self, resource_type: str, resource_id: str, previous: Previous) -> None:
        held = self._entries(resource_type, resource_id, previous.remote_id)
        if resource_type == "User" and self._orphaned(previous.remote_id, held):
            kept = self.mappings["User"].options.get("on_delete") == "disable" and held
            self._rewrite_members(previous.remote_id, held[0] if kept else None)
        for dn in held:
            self.remove_key(resource_type, dn)

    def remove_key(self, resource_type: str, key: str) -> None:
        opts = self.mappings[resource_type].options
        how = opts.get("on_delete", "delete")
        if how == "disable":
            disable = opts.get("disable") or {}
            changes = {disable["attribute"]: [(MODIFY_REPLACE, [str(disable.get("value", "disabled"))])]}
            self._op(f"disable {key}", lambda c: c.modify(key, changes), ok=(NO_SUCH_OBJECT,))
            return
        if resource_type == "User":
            self._rewrite_members(key, None)
        if how == "move":
            rdn = "{}={}".format(*parse_dn(key)[0][:2])
            self._op(f"move {key}", lambda c: c.modify_dn(key, rdn, new_superior=opts["disabled_base"]),
                     ok=(NO_SUCH_OBJECT, ALREADY_EXISTS))
            return
        self._op(f"delete {key}", lambda c: c.delete(key), ok=(NO_SUCH_OBJECT,))

    def read(self, resource_type: str) -> dict[str, dict[str, Any]]:
        opts = self.mappings[resource_type].options
        names = list(self.mappings[resource_type].fields) + (["member"] if resource_type == "Group" else [])
        if opts.get("on_delete") == "disable":
            names.append(opts["disable"]["attribute"])
        cls = escape_filter_chars(opts["object_classes"][0])
        out = {}
        for entry in self._search(self._base(resource_type), f"(objectClass={cls})", names):
            fields: dict[str, Any] = {}
            for name in names:
                value = entry.get(name)
                if name == "member":
                    fields[name] = sorted(norm_dn(v) for v in value or [] if norm_dn(v) != norm_dn(entry["dn"])
                                          and v != opts.get("empty_member"))
                elif isinstance(value, list):
                    fields[name] = value[0] if len(value) == 1 else (value or None)
                else:
                    fields[name] = value
            out[norm_dn(entry["dn"])] = fields
        return out

    def is_removed(self, resource_type: str, fields: dict[str, Any]) -> bool:
        opts = self.mappings[resource_type].options
        if opts.get("on_delete") != "disable":
            return False
        disable = opts["disable"]
        return str(fields.get(disable["attribute"])) == str(disable.get("value", "disabled"))

    def close(self) -> None:
        self._drop()


__all__ = ["LdapConnector", "BASE"]
