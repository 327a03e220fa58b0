"""``scimbus resync``: compare a connector's target with the directory and repair the drift.

Deliveries keep a target in step change by change; resync is the repair for everything
else (rows edited or deleted by hand, a target restored from an old backup, a scope that
changed). Both sides are rendered the same way (the connector's mapping, its ``read``),
keyed by the target's own key, and compared value by value after normalisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from libs.connectors.base import Connector, Previous
from libs.connectors.sql import normalise
from libs.scim.schemas import RESOURCE_TYPES
from libs.store import deliveries as ledger
from libs.store.deliveries import ResourceKey
from services.worker.fanout import DeliveryContext, _Lookup

PAGE = 500


@dataclass
class Drift:
    resource_type: str
    action: str  # create, change, remove
    key: str
    fields: list[str] = field(default_factory=list)


@dataclass
class Report:
    drift: list[Drift] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for d in self.drift if d.action == action)

    def summary(self) -> str:
        return (f"created {self.count('create')}, changed {self.count('change')}, "
                f"removed {self.count('remove')}")


def _directory(ctx: DeliveryContext, connector: Connector, kind: str):
    schema = RESOURCE_TYPES[kind]
    start = 1
    while True:
        total, docs = ctx.store.search(connector.options["app"], schema, None, start_index=start, count=PAGE)
        yield from docs
        start += PAGE
        if start > total:
            return


def resync(ctx: DeliveryContext, connector: Connector, *, dry_run: bool,
           progress: Callable[[int, int], None] | None = None) -> Report:
    report = Report()
    app = connector.options["app"]
    for kind in connector.mappings:
        target = connector.read(kind)
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
            differs = [n for n, v in fields.items() if normalise(v) != normalise(have.get(n))]
            if differs:
                todo.append((Drift(kind, "change", key, differs), (doc, fields)))
        for key, have in target.items():
            if key not in desired and not connector.is_removed(kind, have):
                todo.append((Drift(kind, "remove", key), None))
        for done, (drift, payload) in enumerate(todo, 1):
            report.drift.append(drift)
            if not dry_run:
                _repair(ctx, connector, kind, drift, payload, lookup)
            if progress:
                progress(done, len(todo))
    return report


def _repair(ctx: DeliveryContext, connector: Connector, kind: str, drift: Drift, payload, lookup) -> None:
    if drift.action == "remove":
        connector.remove_key(kind, drift.key)
        return
    doc, fields = payload
    key = ResourceKey(connector.options["app"], kind, doc["id"])
    with ctx.store.engine.connect() as conn:
        state = ledger.load_state(conn, connector.name, key)
    remote = connector.apply(kind, doc, fields, Previous(state.remote_id, state.present), lookup)
    state.present, state.remote_id = True, remote or drift.key
    with ctx.store.transaction() as conn:
        ledger.save_state(conn, connector.name, key, state)
