"""The delivery ledger as the deliverer and resync read and write it: per connector and
resource, what its target may hold and what it still owes; dead letters; the lag figures.

The SQL is ``libs.store.deliveries``'; this is the door the deliverer goes through, so it
holds no connection or transaction of its own (issue 20). Each method is one connection
(reads) or one transaction (writes), as the deliverer had them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from libs.store import deliveries as ledger
from libs.store.deliveries import Pending, ResourceKey, State
from libs.store.directory import DirectoryStore


class DeliveryLedger:
    def __init__(self, store: DirectoryStore) -> None:
        self.store = store

    def newest_change_and_state(self, connector: str, key: ResourceKey) -> tuple[tuple[int, int] | None, State]:
        """The (seq, version) of ``key``'s newest change (None: never changed) and what
        ``connector`` last did with it, read on one connection."""
        with self.store.engine.connect() as conn:
            return ledger.latest_change(conn, key), ledger.load_state(conn, connector, key)

    def newest_change(self, key: ResourceKey) -> tuple[int, int] | None:
        with self.store.engine.connect() as conn:
            return ledger.latest_change(conn, key)

    def state(self, connector: str, key: ResourceKey) -> State:
        with self.store.engine.connect() as conn:
            return ledger.load_state(conn, connector, key)

    def states(self, connector: str, app: str, resource_type: str) -> dict[str, State]:
        """{resource id: state} of every ``resource_type`` of ``app`` the connector's ledger knows."""
        with self.store.engine.connect() as conn:
            return ledger.states(conn, connector, app, resource_type)

    def pending(self, connector: str, app: str, types: tuple[str, ...]) -> list[Pending]:
        """Resources of ``app`` (``types``) with changes ``connector`` has not handled, oldest
        first (the sweeper's round)."""
        with self.store.engine.connect() as conn:
            return ledger.pending(conn, connector, app, types)

    def advance_cursor(self, connector: str, app: str, types: tuple[str, ...]) -> None:
        """Move ``connector``'s cursor past what it has handled (``deliveries.advance_cursor``)."""
        with self.store.transaction() as conn:
            ledger.advance_cursor(conn, connector, app, types)

    def save(self, connector: str, key: ResourceKey, state: State, delivered: tuple[int, str] | None = None) -> None:
        """Save ``connector``'s state of ``key``; ``delivered`` (seq, outcome): the target now
        holds change seq, logged in the same transaction (``scimbus audit`` shows when)."""
        with self.store.transaction() as conn:
            ledger.save_state(conn, connector, key, state)
            if delivered is not None:
                ledger.log_delivery(conn, connector, key, *delivered)

    def add_dead_letter(self, connector: str, key: ResourceKey, seq: int, version: int, reason: str,
                        attempts: int) -> None:
        with self.store.transaction() as conn:
            ledger.add_dead_letter(conn, connector, key, seq, version, reason, attempts)

    def lag_and_dead(self, connectors: Mapping[str, tuple[str, tuple[str, ...]]],
                     now: datetime) -> dict[str, tuple[float, int]]:
        """{connector: (seconds its oldest pending change has waited, dead letters)} for
        ``connectors`` = {name: (app, resource types)}, read on one connection."""
        out = {}
        with self.store.engine.connect() as conn:
            for name, (app, types) in connectors.items():
                oldest = ledger.oldest_pending_at(conn, name, app, types)
                out[name] = ((now - oldest).total_seconds() if oldest else 0.0, ledger.dead_count(conn, name))
        return out
