"""LDAP string preparation (RFC 4518) for comparing values and DNs as a directory does.

A directory matches ``uid``, ``cn`` and the other naming attributes with ``caseIgnoreMatch``,
whose values are prepared before they are compared: mapped (soft hyphens, joiners and
control characters dropped, every kind of space made a space, case folded), normalised to
NFKC (``ａｄｍｉｎ`` becomes ``admin``) and stripped of insignificant spaces (leading,
trailing, and runs inside). Comparing with ``str.lower()`` instead, the connector took
``uid=ａｄｍｉｎ`` for a new entry while the server took it for ``uid=admin``.

Written here: the Python packages that implement RFC 4518 are parts of an LDAP server
framework (``ldapserver``, 0.1, 2022) or an unmaintained client (``laurelin-ldap``, 2019),
and neither ldap3 nor python-ldap exposes it. The standard library has what it needs: the
RFC 3454 tables (``stringprep``, whose B.2 is RFC 4518's case folding) and NFKC.

Prohibited characters (RFC 4518 §2.4) make a value unmatchable; here they are kept, so such
a value simply matches only itself. Bidirectional text needs no step (§2.5).
"""

from __future__ import annotations

import functools
import stringprep
import unicodedata

from ldap3.core.exceptions import LDAPException
from ldap3.utils.dn import escape_rdn, parse_dn

_TO_NOTHING = frozenset(
    [0x00AD, 0x1806, 0x034F, 0x180B, 0x180C, 0x180D, 0xFFFC, 0x200B, 0x06DD, 0x070F, 0x180E, 0xFEFF,
     *range(0xFE00, 0xFE10), *range(0x0000, 0x0009), *range(0x000E, 0x0020), *range(0x007F, 0x0085),
     *range(0x0086, 0x00A0), *range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2064),
     *range(0x206A, 0x2070), *range(0xFFF9, 0xFFFC), *range(0x1D173, 0x1D17B), 0xE0001, *range(0xE0020, 0xE0080)])
"""RFC 4518 §2.2: code points mapped to nothing."""
_TO_SPACE = frozenset([0x0009, 0x000A, 0x000B, 0x000C, 0x000D, 0x0085])


def _map(value: str, fold: bool) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if code in _TO_NOTHING:
            continue
        if code in _TO_SPACE or unicodedata.category(ch) in ("Zs", "Zl", "Zp"):
            out.append(" ")
        else:
            out.append(stringprep.map_table_b2(ch) if fold else ch)
    return "".join(out)


def prepare(value: str, *, case_fold: bool = True) -> str:
    """The form of ``value`` that a (case-ignoring, by default) equality match compares."""
    normalised = unicodedata.normalize("NFKC", _map(value, case_fold))
    return " ".join(part for part in normalised.split(" ") if part)  # insignificant spaces (§2.6.1)


_HEX = frozenset("0123456789abcdefABCDEF")


def _unescape(value: str) -> str:
    """An attribute value of a DN string as the value itself (RFC 4514 §3: ``\\,`` and ``\\2C``)."""
    out, raw, i = [], bytearray(), 0
    while i < len(value):
        pair = value[i + 1:i + 3]
        if value[i] == "\\" and len(pair) == 2 and set(pair) <= _HEX:  # a byte of UTF-8
            raw.append(int(pair, 16))
            i += 3
            continue
        if raw:
            out.append(raw.decode("utf-8", errors="replace"))
            raw = bytearray()
        if value[i] == "\\" and i + 1 < len(value):  # an escaped character
            i += 1
        out.append(value[i])
        i += 1
    out.append(raw.decode("utf-8", errors="replace"))
    return "".join(out)


@functools.lru_cache(maxsize=100_000)
def dn_key(dn: str) -> str:
    """A DN in one spelling per entry: attribute types lower case, each value prepared
    (the naming attributes are case-ignoring), the values of a multi-valued RDN in order.
    Still a DN naming the same entry, so it can be sent back to the server. Cached: a group's
    member values and every rendered user name the same DNs again and again, and parsing one
    costs ~0.1 ms."""
    try:
        parts = parse_dn(dn, strip=True)
    except LDAPException:
        return prepare(dn)
    rdns, current = [], []
    for attribute, value, separator in parts:
        current.append(f"{attribute.strip().lower()}={escape_rdn(prepare(_unescape(value.strip())))}")
        if separator != "+":
            rdns.append("+".join(sorted(current)))
            current = []
    return ",".join(rdns)
