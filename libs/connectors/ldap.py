"""``ldap``: users and groups into an LDAP directory (``inetOrgPerson``, ``groupOfNames``).

::

    [connectors.corp]
    type = "ldap"
    url = "ldaps://ldap.corp.example:636"           # or ldap://… with start_tls = true
    ca_file = "/etc/scimbus/corp-ca.pem"            # default: the system's CAs
    bind_dn = "cn=scimbus,ou=services,dc=corp,dc=example"
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
    attributes = { cn = "displayName", businessCategory = "id" }

Transport: the server's certificate is verified (against ``ca_file``, else the system's CAs,
and its name against the URL's host) on ``ldaps://`` and with ``start_tls = true``. A
simple bind over an unencrypted connection sends the password in clear: a connector that
would do it is refused when the config loads, unless it says ``allow_insecure = true``.

The entry's DN is computed from its attributes, so a change of the naming attribute is a
rename (modify DN), after which every ``member`` value naming the old DN is rewritten (no
referential-integrity overlay is assumed). Group members are user DNs; ``groupOfNames``
must have a member, so an empty group holds ``empty_member`` (default: the group itself).
``ref = "dn"`` maps a referenced user (the manager) to its DN. Removal deletes the entry,
sets ``disable.attribute`` to ``disable.value``, or moves it under ``disabled_base``.

Ownership: every type needs an attribute mapped from ``id`` (``employeeNumber``,
``businessCategory`` above), its *anchor*. The connector changes only entries that carry
the resource's id there: an entry that holds a resource's DN without it (made by hand, or by
another system) is a conflict, dead-lettered with the reason, never overwritten; member
values are rewritten only in groups that carry a scimbus id. ``scimbus resync --adopt``
takes such entries over. The DN the delivery ledger holds may be stale: a rename whose
answer was lost (a timeout, a killed deliverer) moved the entry without the ledger learning
its new DN, so renames and removals find the entry by its anchor, wherever it is. Index the
anchors (``eq``) in a large directory.

Values and DNs are compared as the directory compares them (``libs.connectors.ldapprep``,
RFC 4518): ``uid=ａｄｍｉｎ`` names the entry ``uid=admin``.

Directory scale: every search asks for paged results (RFC 2696), ``page_size`` entries a
page (500; halved while the server refuses the size, as OpenLDAP does past its limit; Active
Directory caps pages at 1,000), so reads past the server's size limit are whole; a large
``member`` attribute that the server hands out in ranges (Active Directory's
``member;range=0-1499``) is read to its end (ldap3's ``auto_range``).
"""

from __future__ import annotations

import re
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPCommunicationError, LDAPException, LDAPMaximumRetriesError, LDAPResponseTimeoutError, LDAPSocketOpenError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn

from libs.connectors.base import Connector, Lookup, Previous
from libs.connectors.errors import Conflict, Rejected, Unavailable
from libs.connectors.ldapprep import dn_key, prepare

_SECTION = {"User": "users", "Group": "groups"}
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
# busy, unavailable, unwillingToPerform-by-load, other: worth a retry; the rest are refusals.
_RETRYABLE_RESULTS = frozenset({51, 52, 80})
NO_SUCH_OBJECT, ALREADY_EXISTS, ADMIN_LIMIT_EXCEEDED = 32, 68, 11
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
PAGE_SIZE = 500
"""Entries per page of a search; the server's own limit, when lower, is found by halving."""
_SMALLEST_PAGE = 10

norm_dn = dn_key
"""A DN in the one spelling the directory's matching gives it (RFC 4518)."""


def _is_scimbus_id(value: str) -> bool:
    """Whether an anchor value is an id scimbus assigned (a UUID)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass
class LdapConnector(Connector):
    kind_name = "ldap"
    _conn: Connection | None = field(default=None, init=False, repr=False)
    _page: int = field(default=0, init=False, repr=False)
    """Entries per page this server takes (0: ``page_size`` until it refuses it)."""

    @classmethod
    def from_config(cls, **common) -> LdapConnector:
        options = common["options"]
        url = str(options.get("url", ""))
        if not url.startswith(("ldap://", "ldaps://")):
            raise ValueError("url must be an ldap:// or ldaps:// URL")
        if options.get("start_tls") and not url.startswith("ldap://"):
            raise ValueError("start_tls goes with an ldap:// URL (ldaps:// is TLS from the start)")
        if options.get("ca_file") and not Path(options["ca_file"]).is_file():
            raise ValueError(f"ca_file {options['ca_file']!r} is not a file")
        encrypted = url.startswith("ldaps://") or bool(options.get("start_tls"))
        if not encrypted and (options.get("bind_dn") or options.get("password")) and not options.get("allow_insecure"):
            raise ValueError("a simple bind over ldap:// without start_tls sends the password in clear: use "
                             "ldaps://, or start_tls = true, or (on a network you trust) allow_insecure = true")
        if int(options.get("page_size", PAGE_SIZE)) < 1:
            raise ValueError("page_size must be positive")
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
        connector = cls(**common)
        for kind in connector.mappings:
            if connector._anchor(kind) is None:
                raise ValueError(f"{_SECTION[kind]}: map an attribute from id, the anchor (e.g. employeeNumber = "
                                 '"id"): the connector changes only entries that carry it')
        return connector

    # ------------------------------------------------------------------ plumbing
    @property
    def conn(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> Connection:
        url, timeout = self.options["url"], int(self.options.get("timeout", 5))
        tls = _VerifiedTls(self.options.get("ca_file") or None, urlsplit(url).hostname or "")
        server = Server(url, connect_timeout=timeout, tls=tls)
        conn = Connection(server, self.options.get("bind_dn"), self.options.get("password"),
                          receive_timeout=timeout * 2, raise_exceptions=False, auto_range=True)
        try:
            conn.open()
            if self.options.get("start_tls") and not conn.start_tls():
                raise Unavailable(f"LDAP StartTLS failed: {conn.last_error}")
            if not (server.ssl or conn.tls_started) and (conn.user or conn.password) \
                    and not self.options.get("allow_insecure"):
                raise Rejected("refusing a simple bind over an unencrypted connection (allow_insecure is not set)")
            if not conn.bind():
                raise self._refusal(conn.result, "bind")
        except (LDAPSocketOpenError, LDAPStartTLSError) as exc:
            _close(conn)
            if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower():
                raise Unavailable(f"LDAP server's certificate failed verification (ca_file "
                                  f"{self.options.get('ca_file') or 'not set: the system CAs'}): {exc}") from exc
            raise Unavailable(f"LDAP server unreachable: {exc}") from exc
        except LDAPException as exc:
            _close(conn)
            raise Unavailable(f"LDAP connection failed: {exc}") from exc
        except Exception:
            _close(conn)
            raise
        return conn

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
            _close(self._conn)
        self._conn = None

    def _search(self, base: str, flt: str, attrs: list[str], scope=SUBTREE) -> list[dict[str, Any]]:
        """Every entry, page by page (RFC 2696): a server's size limit never cuts a read short."""
        entries: list[dict[str, Any]] = []
        cookie = None
        while True:
            size = self._page_size
            code = self._op(f"search {base}", lambda c: c.search(base, flt, scope, attributes=attrs, paged_size=size,
                                                                 paged_cookie=cookie),
                            ok=(NO_SUCH_OBJECT, ADMIN_LIMIT_EXCEEDED))
            if code == NO_SUCH_OBJECT:
                return entries
            if code == ADMIN_LIMIT_EXCEEDED:  # pages larger than the server allows (OpenLDAP's size.pr)
                if cookie is not None or size <= _SMALLEST_PAGE:
                    raise self._refusal(self._conn.result, f"search {base}")
                self._page_size = max(_SMALLEST_PAGE, size // 2)
                continue
            entries += [{"dn": e["dn"], **e["attributes"]} for e in self._conn.response
                        if e.get("type") == "searchResEntry"]
            control = (self._conn.result.get("controls") or {}).get(_PAGED_RESULTS) or {}
            cookie = (control.get("value") or {}).get("cookie")
            if not cookie:
                return entries

    @property
    def _page_size(self) -> int:
        return self._page or int(self.options.get("page_size", PAGE_SIZE))

    @_page_size.setter
    def _page_size(self, size: int) -> None:
        self._page = size

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

    def _anchor_value(self, resource_type: str, resource_id: str) -> str:
        """The anchor attribute's value for a resource (its id, through the field's transform)."""
        source = self.mappings[resource_type].fields[self._anchor(resource_type)]
        return str(source.value({"id": resource_id}, lambda *_: None))

    def _carries(self, entry: dict[str, Any], resource_type: str, resource_id: str) -> bool:
        """Whether an entry read with its anchor attribute is this resource's."""
        wanted = prepare(self._anchor_value(resource_type, resource_id))
        return any(prepare(str(v)) == wanted for v in _values(entry.get(self._anchor(resource_type))))

    def _entries(self, resource_type: str, resource_id: str) -> list[str]:
        """The DNs of the entries that carry the resource's anchor, wherever they are.

        The ledger's DN may be stale: a rename whose answer was lost (a timeout, a killed
        deliverer) moved the entry without the ledger learning its new DN, and a deletion
        sent to the old one would succeed and leave the entry for good; another resource's
        entry may have taken that DN since. The anchor finds the entry under any name.
        """
        anchor = self._anchor(resource_type)
        cls = escape_filter_chars(self.mappings[resource_type].options["object_classes"][0])
        value = escape_filter_chars(self._anchor_value(resource_type, resource_id))
        return [e["dn"] for e in self._search(self._base(resource_type), f"(&(objectClass={cls})({anchor}={value}))",
                                              [anchor]) if self._carries(e, resource_type, resource_id)]

    def _entry(self, dn: str, attrs: list[str]) -> dict[str, Any] | None:
        found = self._search(dn, "(objectClass=*)", attrs, scope=BASE)
        return found[0] if found else None

    def _claim(self, resource_type: str, resource_id: str, dn: str, previous: Previous) -> None:
        """The entry already at the resource's DN may be overwritten only when it is ours."""
        anchor = self._anchor(resource_type)
        entry = self._entry(dn, [anchor])
        if entry is None:  # gone since the add was refused: the next attempt adds it
            raise Unavailable(f"LDAP entry {dn} existed and vanished meanwhile")
        if previous.adopt or self._carries(entry, resource_type, resource_id):
            return
        held = _values(entry.get(anchor))
        raise Conflict(f"LDAP entry {dn} exists and is not ours: its {anchor} is "
                       f"{', '.join(map(str, held)) if held else 'empty'}, not {resource_id}; it was left as it is "
                       "(scimbus resync --adopt takes it over)")

    def _orphaned(self, dn: str | None, held: list[str]) -> bool:
        """Whether member values naming ``dn`` are the resource's though no entry of it is there:
        a rename whose answer was lost moved the entry before its groups were rewritten. Values
        naming another resource's entry, which took the name since, are not."""
        return bool(dn) and norm_dn(dn) not in {norm_dn(h) for h in held} and self._entry(dn, []) is None

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
        if code == ALREADY_EXISTS:  # ours from an earlier delivery, or another's: never overwrite that
            self._claim(resource_type, doc["id"], dn, previous)
            changes = {k: [(MODIFY_REPLACE, v)] for k, v in attrs.items()}
            self._op(f"modify {dn}", lambda c: c.modify(dn, changes))
        return dn

    def _move(self, resource_type: str, resource_id: str, old: str, new: str) -> None:
        """Rename the resource's entry to ``new``, and every member value naming it by an older DN
        (a rename whose answer was lost may have moved the entry but not rewritten its groups)."""
        held = self._entries(resource_type, resource_id)
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
        """Member values naming ``old`` become ``new`` (or go), in the groups that are scimbus's:
        those whose anchor holds a scimbus id."""
        if "Group" not in self.mappings:
            return
        anchor = self._anchor("Group")
        groups = self._search(self._base("Group"), f"(&(member={escape_filter_chars(old)})({anchor}=*))",
                              ["member", anchor])
        for group in groups:
            if not any(_is_scimbus_id(str(v)) for v in _values(group.get(anchor))):
                continue
            changes = {"member": [(MODIFY_DELETE, [old])] + ([(MODIFY_ADD, [new])] if new else [])}
            if not new and len(group.get("member", [])) <= 1:
                placeholder = self.mappings["Group"].options.get("empty_member") or group["dn"]
                changes = {"member": [(MODIFY_REPLACE, [placeholder])]}
            self._op(f"modify {group['dn']}", lambda c, g=group, ch=changes: c.modify(g["dn"], ch),
                     ok=(16, 20))  # noSuchAttribute / attributeOrValueExists: already as wanted

    def remove(self, resource_type: str, resource_id: str, previous: Previous) -> None:
        held = self._entries(resource_type, resource_id)
        if not held and previous.remote_id:
            anchor = self._anchor(resource_type)
            entry = self._entry(previous.remote_id, [anchor])
            if entry is not None and not _values(entry.get(anchor)):
                raise Conflict(f"LDAP entry {previous.remote_id} does not carry the anchor {anchor}: not ours, or "
                               "written before the anchor was mapped; it was not removed (scimbus resync --adopt "
                               "takes it over, or remove it by hand)")
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

    def owner(self, resource_type: str, key: str, fields: dict[str, Any]) -> str | None:
        values = _values(fields.get(self._anchor(resource_type)))
        return prepare(str(values[0])) if len(values) == 1 else None

    def is_removed(self, resource_type: str, fields: dict[str, Any]) -> bool:
        opts = self.mappings[resource_type].options
        if opts.get("on_delete") != "disable":
            return False
        disable = opts["disable"]
        return str(fields.get(disable["attribute"])) == str(disable.get("value", "disabled"))

    def close(self) -> None:
        self._drop()


class _VerifiedTls(Tls):
    """TLS that verifies the server's certificate (against ``ca_file``, else the system's CAs)
    and its name against the URL's host, both by Python's ``ssl``, as every modern client does.

    ldap3's own ``Tls`` defaults to no verification at all (``CERT_NONE``), and when asked to
    verify it turns the context's name check off and checks the name itself with
    ``ssl.match_hostname``, deprecated and gone in Python 3.12 (it then falls back to a copy
    of its own)."""

    def __init__(self, ca_file: str | None, host: str) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file, sni=host)
        self.host = host

    def wrap_socket(self, connection, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)  # CERT_REQUIRED, names checked, TLS 1.2+
        connection.socket = context.wrap_socket(connection.socket, server_side=False, server_hostname=self.host,
                                                do_handshake_on_connect=do_handshake)


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except LDAPException:  # a socket that failed to open, or died
        pass


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


__all__ = ["LdapConnector", "BASE"]
