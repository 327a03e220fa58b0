"""``scimbus resync``: compare a connector's target with the directory and repair the drift.

Deliveries keep a target in step change by change; resync is the repair for everything
else (rows edited or deleted by hand, a target restored from an old backup, a scope that
changed). Both sides are rendered the same way (the connector's mapping, its ``read``),
keyed by the target's own key, and compared value by value after normalisation.

What it touches is what is ours: a target entry is ours when its anchor (``Connector.owner``:
the SQL key column, the LDAP attribute mapped from ``id``, the relay's externalId) names a
resource this connector knows, one of the directory (in scope or not) or of its delivery
ledger. So:

- an entry of ours that the directory no longer wants is removed;
- a *foreign* entry (no anchor, or one naming nothing we know: a row the application made,
  an entry made by hand) is reported and left; ``--prune-foreign`` removes it;
- a *conflict* (a foreign entry where a directory resource belongs: its DN, its userName
  at the relay) is reported and left; ``--adopt`` takes it over, writing our anchor on it.

``--dry-run`` reports all of it and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from libs.connectors.base import Connector, Previous
from libs.connectors.errors import Conflict
from libs.connectors.sql import normalise
from libs.scim.schemas import RESOURCE_TYPES
from libs.store.deliveries import ResourceKey
from services.deliverer.fanout import DeliveryContext, _Lookup

PAGE = 500


@dataclass
class Drift:
    resource_type: str
    action: str  # create, change, remove; adopt, conflict (left); prune, foreign (left)
    key: str
    fields: list[str] = field(default_factory=list)
    """The fields that differ (change), or why an entry is left (conflict, foreign)."""


LEFT = ("conflict", "foreign")
"""Actions that change nothing: reported for the operator, who may --adopt or --prune-foreign."""


@dataclass
class Report:
    drift: list[Drift] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for d in self.drift if d.action == action)

    def summary(self) -> str:
        done = (f"created {self.count('create')}, changed {self.count('change')}, "
                f"removed {self.count('remove')}")
        if self.count("adopt") or self.count("prune"):
            done += f", adopted {self.count('adopt')}, pruned {self.count('prune')}"
        if self.count("conflict") or self.count("foreign"):
            done += (f"; left {self.count('conflict')} conflicting (--adopt takes them over) and "
                     f"{self.count('foreign')} foreign (--prune-foreign removes them)")
        return done


def _directory(ctx: DeliveryContext, connector: Connector, kind: str, **related: bool):
    schema = RESOURCE_TYPES[kind]
    start = 1
    while True:
        total, docs = ctx.store.search(connector.options["app"], schema, None, start_index=start, count=PAGE,
                                       **related)
        yield from docs
        start += PAGE
        if start > total:
            return


def _known(ctx: DeliveryContext, connector: Connector, kind: str) -> set[str]:
    """Every resource id this connector may have written: the directory's (any scope) and
    its ledger's (deleted since, or delivered by an older config)."""
    ids = {doc["id"].lower() for doc in _directory(ctx, connector, kind, with_members=False, with_groups=False)}
    ids.update(i.lower() for i in ctx.ledger.states(connector.name, connector.options["app"], kind))
    return ids


def resync(ctx: DeliveryContext, connector: Connector, *, dry_run: bool, adopt: bool = False,
           prune_foreign: bool = False, progress: Callable[[int, int], None] | None = None) -> Report:
    report = Report()
    app = connector.options["app"]
    for kind in connector.mappings:
        target = connector.read(kind)
        known = _known(ctx, connector, kind)
        lookup = _Lookup(ctx.store, app)
        desired: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for doc in _directory(ctx, connector, kind):
            if connector.scope.includes(kind, doc):
                fields = connector.render(kind, doc, lookup)
                desired[connector.key(kind, doc, fields)] = (doc, fields)
        todo: list[tuple[Drift, Any]] = []
        for key, (doc, fields) in desired.items():
            have = target.get(key)
            if have is None or connector.is_removed(kind, have):
                todo.append((Drift(kind, "create", key), (doc, fields)))
                continue
            owner = connector.owner(kind, key, have)
            if (owner or "").lower() != doc["id"].lower():
                why = [f"held by {owner}" if owner else "no anchor"]
                todo.append((Drift(kind, "adopt" if adopt else "conflict", key, why), (doc, fields)))
                continue
            differs = [n for n, v in fields.items() if normalise(v) != normalise(have.get(n))]
            if differs:
                todo.append((Drift(kind, "change", key, differs), (doc, fields)))
        for key, have in target.items():
            if key in desired or connector.is_removed(kind, have):
                continue
            owner = connector.owner(kind, key, have)
            if owner and owner.lower() in known:
                todo.append((Drift(kind, "remove", key), None))
            else:
                why = [f"anchor {owner} is no resource of ours" if owner else "no anchor"]
                todo.append((Drift(kind, "prune" if prune_foreign else "foreign", key, why), None))
        # Removals last: an entry adopted in this run is ours by the time its removal comes.
        todo.sort(key=lambda item: item[0].action in ("remove", "prune"))
        for done, (drift, payload) in enumerate(todo, 1):
            if not dry_run and drift.action not in LEFT:
                try:
                    if _repair(ctx, connector, kind, drift, payload, lookup, adopt) is False:
                        continue  # adopted in this run: ours, not removed
                except Conflict as exc:  # met on the way (a relay's 409, a DN read did not list)
                    drift = Drift(kind, "conflict", drift.key, [str(exc)])
            report.drift.append(drift)
            if progress:
                progress(done, len(todo))
    return report


def _repair(ctx: DeliveryContext, connector: Connector, kind: str, drift: Drift, payload, lookup,
            adopt: bool) -> bool | None:
    if drift.action in ("remove", "prune"):
        return connector.remove_key(kind, drift.key)
    doc, fields = payload
    key = ResourceKey(connector.options["app"], kind, doc["id"])
    state = ctx.ledger.state(connector.name, key)
    remote = connector.apply(kind, doc, fields, Previous(state.remote_id, state.present, adopt=adopt), lookup)
    state.present, state.remote_id = True, remote or drift.key
    ctx.ledger.save(connector.name, key, state)
