"""The delivery ledger as an operator's commands read and repair it (``scimbus deliveries``):
per connector, what waits, what fails and what is dead-lettered; dead letters released for
another try. The SQL is ``libs.store.deliveries``'; this is the door the CLI goes through,
so no command holds a database connection of its own (issue 20)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from libs.store import deliveries as ledger
from libs.store.deliveries import ResourceKey
from libs.store.directory import DirectoryStore


@dataclass(frozen=True)
class ConnectorStatus:
    pending: int
    oldest_pending: datetime | None
    failing: list[dict[str, Any]]
    """Rows of resources whose last attempt failed and will be retried."""
    dead: list[dict[str, Any]]
    """Dead letters not yet released."""


def connector_status(store: DirectoryStore, connector: str, app: str, types: tuple[str, ...],
                     *, limit: int = 100_000) -> ConnectorStatus:
    with store.engine.connect() as conn:
        waiting = ledger.pending(conn, connector, app, types, limit=limit)
        return ConnectorStatus(len(waiting), min((p.since for p in waiting), default=None),
                               ledger.failing(conn, connector), ledger.dead(conn, connector))


def release_dead(store: DirectoryStore, connector: str, ids: list[int] | None) -> list[ResourceKey]:
    """Mark ``connector``'s dead letters ``ids`` (None: all of them) retried and their resources
    pending again; returns the resources, to enqueue."""
    with store.transaction() as conn:
        return ledger.release_dead(conn, connector, ids)
