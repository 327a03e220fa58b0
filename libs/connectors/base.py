"""The contract every downstream connector follows.

Delivery is state-based: a connector is handed the resource *as it is now* (rendered to
its target fields by the mapping) or told that it is gone, never a diff. So:

- ``apply`` creates or overwrites; applying the same state twice leaves the target as
  once (idempotent), and it never needs to know what happened in between.
- ``remove`` deletes (or disables, as configured); removing what is already gone succeeds,
  and so does removing what an attempt may or may not have created (an answer lost to a
  timeout or a killed deliverer): the delivery loop sends it whenever the target *may* hold
  the resource. The remote id it is given may be stale, when such an attempt changed it (an
  LDAP rename, a SCIM re-create): a connector whose remote ids can change finds the resource
  by a value that cannot (the LDAP anchor, the SCIM externalId) when that id is gone.
- Failures raise the ``libs.connectors.errors`` tree only: ``Retryable`` is retried with
  backoff, ``Permanent`` is dead-lettered with its message as the reason.
- ``read`` returns what the target holds, keyed and shaped exactly as ``render`` would
  produce it, so resync can diff the two; a connector that cannot read raises
  ``Unsupported``.
- ``key`` is the target's name for a resource (a row key, a DN, the relay's externalId):
  resync matches target entries to directory resources by it.
- Ownership: a target entry is ours when it carries our *anchor*, the resource's id in a
  field no rename changes (the SQL key column, an LDAP attribute mapped from ``id``, the
  relay's externalId); ``owner`` reads it from an entry ``read`` returned. A connector
  never modifies or deletes an entry that does not carry it (resync's ``--adopt`` and
  ``--prune-foreign`` aside): meeting one where the resource belongs is a ``Conflict``.

The delivery loop (``services.deliverer.fanout``) serialises deliveries per connector and
resource and checks versions, so a connector never sees an older state after a newer one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from libs.connectors.errors import Unsupported
from libs.connectors.mapping import Mapping as FieldMapping, Scope

KINDS = ("User", "Group")

Lookup = Callable[[str, list[str]], dict[str, dict[str, Any]]]
"""lookup(resource_type, ids) → {id: current SCIM document}: managers and members."""


@dataclass
class Previous:
    """What this connector last delivered for a resource (from the delivery ledger)."""

    remote_id: str | None
    present: bool
    seq: int = 0
    """The outbox seq being delivered: monotonic per resource, deletions included."""
    adopt: bool = False
    """Take over a target entry that holds the resource's place but not our anchor
    (``scimbus resync --adopt``); otherwise such an entry is a ``Conflict``, left untouched."""


@dataclass
class RetryPolicy:
    base: float = 2.0
    """Seconds before the first retry; doubled each attempt."""
    cap: float = 600.0
    """Longest wait between two attempts."""
    max_attempts: int = 30
    """Attempts before a retryable failure is dead-lettered (about 4 hours at the defaults)."""

    def delay(self, attempt: int, rand: float) -> float:
        """Full-jitter exponential backoff: a random wait in [0.5, 1] of the capped step."""
        step = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return step * (0.5 + rand / 2)


@dataclass
class Connector(ABC):
    name: str
    mappings: Mapping[str, FieldMapping]
    scope: Scope
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    options: Mapping[str, Any] = field(default_factory=dict)

    kind_name = "connector"

    def uses_refs(self) -> bool:
        """Whether a user's fields render other users' attributes (its manager's)."""
        return any(source.ref for mapping in self.mappings.values() for source in mapping.fields.values())

    def handles(self, resource_type: str) -> bool:
        return resource_type in self.mappings

    def render(self, resource_type: str, doc: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        """The target fields for a directory resource (what ``apply`` writes, ``read`` returns)."""
        return self.mappings[resource_type].render(doc, lookup)

    @abstractmethod
    def key(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> str:
        """The target's name for this resource."""

    def remote_id_before_apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> str | None:
        """The remote id ``apply`` will return, when it is known before the call (None: the target
        assigns it, and ``remove`` finds the resource without it). The ledger records it before a
        first attempt, so an attempt whose answer is lost can still be undone."""
        return self.key(resource_type, doc, fields)

    @abstractmethod
    def apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any], previous: Previous,
              lookup: Lookup) -> str | None:
        """Create or overwrite the resource in the target; returns the remote id to remember."""

    @abstractmethod
    def remove(self, resource_type: str, resource_id: str, previous: Previous) -> None:
        """Delete (or disable, per config) a resource that left the directory or the scope."""

    def read(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """{key: fields} of everything of this type the target holds, for resync."""
        raise Unsupported(f"{self.kind_name} connector {self.name!r} cannot read its target back")

    def owner(self, resource_type: str, key: str, fields: dict[str, Any]) -> str | None:
        """The resource id the anchor of an entry ``read`` returned names (None: no anchor)."""
        return None

    def remove_key(self, resource_type: str, key: str) -> bool | None:
        """Remove an entry found only in the target (resync, which decided it may); False when
        it found the entry ours by then (adopted in the same run) and left it."""
        raise Unsupported(f"{self.kind_name} connector {self.name!r} cannot remove unknown entries")

    def is_removed(self, resource_type: str, fields: dict[str, Any]) -> bool:
        """Whether an entry read back is already in its removed form (e.g. a disabled row)."""
        return False

    def close(self) -> None:
        """Release connections."""
