"""Attributes no schema declares: one policy for POST, PUT and PATCH (``SCIM_UNKNOWN_ATTRIBUTES``).

An Entra administrator can map attributes we do not publish, a custom extension such as
``urn:ietf:params:scim:schemas:extension:Contoso:2.0:User:costCenter`` among them, without
touching our configuration; Entra quarantines an app whose requests fail too often. So by
default an undeclared attribute is *ignored*: the write succeeds without it, whichever
verb carries it and wherever it sits (a body key, a sub-attribute, a PATCH path or a
value filter in it, a path-less PATCH value, an undeclared extension's object). ``reject``
answers ``400 invalidPath`` for every one of those instead.

The validator (``libs.scim.validate``) and the PATCH engine (``libs.scim.patch``) find the
names and hand each to an ``Undeclared`` callback:

- ``silent``, their default: drop it (the worker re-validating a body the front checked);
- a ``Policy`` built from the setting: ``reject`` raises ``UndeclaredPath``; ``ignore``
  keeps the names, and ``report()`` logs a warning the first time this process meets one
  and counts every one in ``scim_undeclared_attributes_total{attribute}``, so an
  administrator sees what to declare in a ``[[schemas]]`` table. The front reports the
  names of bodies (POST, PUT, Bulk), the worker those of PATCH requests.

The names come from clients, so the metric's label is bounded: at most ``MAX_NAMES``
distinct names per process get a label of their own, later ones count as ``(other)``, and
a name that is not an attribute name (RFC 7643 §2.1, optionally URN-qualified and with
one sub-attribute) counts as ``(invalid)`` and is never logged.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from libs.scim.errors import InvalidPath

Undeclared = Callable[[str], None]

MAX_NAMES = 100
"""Distinct attribute names one process labels (and logs) before counting more as ``(other)``."""
OTHER = "(other)"
INVALID = "(invalid)"

_ATTRIBUTE_NAME = re.compile(r"(?:urn:[A-Za-z0-9.:_\-]{1,200}:)?\$?[A-Za-z][A-Za-z0-9_\-]{0,63}"
                             r"(?:\.\$?[A-Za-z][A-Za-z0-9_\-]{0,63})?")

log = logging.getLogger("scimbus.scim")


class UndeclaredPath(InvalidPath):
    """A write names an attribute no schema declares, and ``SCIM_UNKNOWN_ATTRIBUTES=reject``."""


def silent(name: str) -> None:
    """Drop the attribute without a word."""


def names_in(key: str, value: Any, resource_type: str) -> list[str]:
    """The undeclared names a key and its value stand for: an undeclared extension given as
    an object (``urn:…:Contoso:2.0:User`` → ``{costCenter: …}``) holds one per key
    (``urn:…:Contoso:2.0:User:costCenter``, what an administrator would declare); any other
    key is one name. A schema URN of the RFC's shape ends in its resource type."""
    if (isinstance(value, dict) and value and key[:4].lower() == "urn:"
            and key.rsplit(":", 1)[-1].lower() == resource_type.lower()):
        return [f"{key}:{sub}" for sub in value]
    return [key]


class Policy:
    """``SCIM_UNKNOWN_ATTRIBUTES`` for one request: call it with each undeclared name."""

    def __init__(self, setting: str) -> None:
        self.reject = setting == "reject"
        self.names: list[str] = []

    def __call__(self, name: str) -> None:
        if self.reject:
            raise UndeclaredPath(f"{name[:200]!r} is not an attribute of any schema this server declares "
                                 "(SCIM_UNKNOWN_ATTRIBUTES=reject).")
        self.names.append(name)

    def report(self) -> None:
        """Log and count the names met (ignored: the write goes on without them)."""
        if not self.names:
            return
        # Imported here, not at the top: libs.scim stays free of metrics, and no protocol
        # module defines metrics before a role has set its multiprocess folder.
        from libs.metrics.metrics import count_undeclared

        for name in dict.fromkeys(self.names):
            label, first = _labels.label(name)
            if first:
                log.warning("ignored the undeclared attribute %s (SCIM_UNKNOWN_ATTRIBUTES=ignore); declare it in a "
                            "[[schemas]] table of the config file to keep its values", label)
            count_undeclared(label)
        self.names.clear()


class _Labels:
    """The label of each name, at most ``MAX_NAMES`` of them per process (threads share it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.known: dict[str, str] = {}
        self.full = False

    def label(self, name: str) -> tuple[str, bool]:
        """(label, whether this process meets it for the first time)."""
        if not _ATTRIBUTE_NAME.fullmatch(name):
            return INVALID, False
        key = name.lower()  # attribute names are case-insensitive (RFC 7643 §2.1)
        with self.lock:
            if key in self.known:
                return self.known[key], False
            if len(self.known) >= MAX_NAMES:
                if not self.full:
                    self.full = True
                    log.warning("more than %d undeclared attribute names: further ones are counted as %s",
                                MAX_NAMES, OTHER)
                return OTHER, False
            self.known[key] = name
            return name, True


_labels = _Labels()
